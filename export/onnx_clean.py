"""Exact rewrites of a tf2onnx fp32 graph, run before quantization, so that the artefact (fp32 and
int8 QDQ alike) loads in runtimes other than ONNX Runtime (OpenCV DNN, OpenVINO), plus the checks
every ONNX export passes.

Keras' BatchNormalization arrives as a Mul and an Add with constants; after ReLU (the book's
CONV => RELU => BN order) quant_pre_process, onnxoptimizer and onnxsim leave them alone, and a
quantized BN after a Dense layer is what OpenCV DNN 4.14 mis-shapes. The rewrites (each exact in
real arithmetic; float results agree to ~1e-6):

1. Transpose(NCHW->NHWC) + Flatten/Reshape + MatMul + Add (Flatten then Dense) becomes one Conv
   whose kernel covers the whole feature map, and the dense layers after it (ReLU, BN, MatMul + Add)
   become 1x1 Convs on a 1x1 map, flattened once before the first node that needs 2-D (Softmax):
   the dynamic Shape/Gather/Concat reshape subgraph goes, and the batch stays free.
2. BN's scale folds into the Conv before it, directly or through a ReLU when every scale is
   positive (relu(s * z) = s * relu(z) for s > 0).
3. BN's shift folds into the Conv before it when nothing is between them, else into the Conv after
   it when that Conv pads nothing (a dense layer); a shift before a padded 3x3 Conv stays an Add
   (folding it would change the border pixels).
4. Nodes and initializers nothing reads are dropped; opset imports keep only the domains used.

`check` runs onnx.checker (full_check) and strict shape inference on the result.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ExportError
from ..modelfile import first_line


class _Graph:
    """Index of a GraphProto: producers, consumers and initializers by name."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.g = model.graph
        self.nh = numpy_helper
        self.inits = {t.name: t for t in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}
        self.reindex()

    def reindex(self) -> None:
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.g.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else self.nh.to_array(t)

    def set_const(self, name: str, value: np.ndarray) -> str:
        """A new initializer (names are never reused: a constant may be shared)."""
        base, k = name, 0
        while name in self.inits or name in self.producer:
            k += 1
            name = f"{base}__edgecv{k}"
        t = self.nh.from_array(np.ascontiguousarray(value), name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name

    def only_consumer(self, name: str) -> Any | None:
        c = self.consumers.get(name, [])
        return c[0] if len(c) == 1 and name not in self.outputs else None

    def bypass(self, node: Any) -> None:
        """Remove a one-input-that-matters node: its readers read its data input instead."""
        data = node.input[0]
        out = node.output[0]
        for n in self.g.node:
            for k, i in enumerate(n.input):
                if i == out:
                    n.input[k] = data
        if out in self.outputs:
            # The graph output keeps its name: the producer of `data` writes it instead.
            prod = self.producer[data]
            for k, o in enumerate(prod.output):
                if o == data:
                    prod.output[k] = out
        self.g.node.remove(node)
        self.reindex()


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _data_and_const(gr: _Graph, node: Any) -> tuple[str, str, np.ndarray] | None:
    """(data input, const input name, const value) of a binary op with one constant operand."""
    if len(node.input) != 2:
        return None
    a, b = node.input
    if gr.const(b) is not None and gr.const(a) is None:
        return a, b, gr.const(b)
    if gr.const(a) is not None and gr.const(b) is None:
        return b, a, gr.const(a)
    return None


def _conv_bias(gr: _Graph, conv: Any) -> np.ndarray:
    w = gr.const(conv.input[1])
    if len(conv.input) > 2 and conv.input[2]:
        return gr.const(conv.input[2]).astype(np.float32)
    return np.zeros(w.shape[0], np.float32)


def _replace_conv_params(gr: _Graph, conv: Any, w: np.ndarray, b: np.ndarray) -> None:
    x = conv.input[0]
    wname = gr.set_const(conv.input[1], w.astype(np.float32))
    bname = gr.set_const((conv.input[2] if len(conv.input) > 2 and conv.input[2] else conv.output[0] + "/bias"),
                         b.astype(np.float32))
    del conv.input[:]
    conv.input.extend([x, wname, bname])


def _per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant that broadcasts per channel over NCHW ([C], [1,C,1,1], [C,1,1]) or a scalar, as [C]."""
    c = np.asarray(c, np.float32)
    if c.size == 1:
        return np.full(channels, float(c.reshape(())), np.float32)
    if c.size == channels and (c.shape in ((channels,), (1, channels, 1, 1), (channels, 1, 1))):
        return c.reshape(channels)
    return None


def dense_to_conv(model: Any) -> bool:
    """Rewrite 1: Flatten + Dense (and the dense layers after it) as Convs. Returns True if changed."""
    from onnx import helper, shape_inference

    gr = _Graph(model)
    shapes = {}
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return False
    for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    changed = False
    for tr in list(gr.g.node):
        if tr.op_type != "Transpose" or list(_attr(tr, "perm", [])) != [0, 2, 3, 1]:
            continue
        x = tr.input[0]
        xs = shapes.get(x)
        if not xs or len(xs) != 4 or any(d is None for d in xs[1:]):
            continue
        _, c, h, w = xs
        rs = gr.only_consumer(tr.output[0])
        if rs is None or rs.op_type not in ("Reshape", "Flatten"):
            continue
        rshape = shapes.get(rs.output[0])
        if rshape is not None and (len(rshape) != 2 or rshape[1] not in (None, c * h * w)):
            continue
        mm = gr.only_consumer(rs.output[0])
        if mm is None or mm.op_type not in ("MatMul", "Gemm"):
            continue
        if mm.op_type == "Gemm" and (_attr(mm, "transA", 0) or _attr(mm, "alpha", 1.0) != 1.0
                                     or _attr(mm, "beta", 1.0) != 1.0):
            continue
        wmat = gr.const(mm.input[1])
        if wmat is None or mm.input[0] != rs.output[0] or wmat.ndim != 2 or wmat.shape[0] != c * h * w:
            continue
        if mm.op_type == "Gemm" and _attr(mm, "transB", 0):
            wmat = wmat.T
        k = wmat.shape[1]
        bias = np.zeros(k, np.float32)
        last = mm
        if mm.op_type == "Gemm" and len(mm.input) > 2 and mm.input[2]:
            bias = gr.const(mm.input[2]).reshape(k).astype(np.float32)
        else:
            add = gr.only_consumer(mm.output[0])
            dc = _data_and_const(gr, add) if add is not None and add.op_type == "Add" else None
            if dc is not None and dc[2].size == k:
                bias = dc[2].reshape(k).astype(np.float32)
                last = add
        # Flatten order is (h, w, c) (NHWC); the Conv kernel is (k, c, h, w).
        kernel = wmat.reshape(h, w, c, k).transpose(3, 2, 0, 1)
        wname = gr.set_const(mm.input[1] + "/conv", kernel.astype(np.float32))
        bname = gr.set_const(mm.input[1] + "/conv_bias", bias)
        conv_out = last.output[0] + "/conv"
        conv = helper.make_node("Conv", [x, wname, bname], [conv_out], name=(mm.name or "dense") + "/conv",
                                kernel_shape=[h, w], pads=[0, 0, 0, 0], strides=[1, 1])
        idx = list(gr.g.node).index(tr)
        gr.g.node.insert(idx, conv)
        # Walk the dense tail on the 1x1 map, then flatten once.
        cur, channels = conv_out, k
        nxt = gr.only_consumer(last.output[0])
        tail_from = last.output[0]
        for n in (tr, rs, mm) + ((last,) if last is not mm else ()):
            gr.g.node.remove(n)
        gr.reindex()
        cur, tail_from, channels = _convert_tail(gr, cur, tail_from, channels)
        flat = helper.make_node("Flatten", [cur], [tail_from], name=tail_from + "/flatten", axis=1)
        # Insert the Flatten before the first reader of tail_from (topological order).
        readers = gr.consumers.get(tail_from, [])
        pos = min([list(gr.g.node).index(n) for n in readers], default=len(gr.g.node))
        gr.g.node.insert(pos, flat)
        gr.reindex()
        changed = True
        del nxt
        break  # one flatten per graph (a classifier head); shapes changed, so stop here
    if changed:
        _drop_dead(gr)
    return changed


def _convert_tail(gr: _Graph, cur: str, tail_from: str, channels: int) -> tuple[str, str, int]:
    """Move the nodes reading `tail_from` (2-D, N x channels) onto the 4-D value `cur` (N x channels
    x 1 x 1) while they are ReLU, per-channel Mul/Add, or MatMul (+ Add) with constants. Returns the
    last 4-D value, the 2-D name the rest of the graph reads, and its channel count."""
    from onnx import helper

    while True:
        node = gr.only_consumer(tail_from)
        if node is None:
            return cur, tail_from, channels
        if node.op_type == "Relu" or node.op_type in ("Dropout", "Identity") and len(node.output) == 1:
            node.input[0] = cur
            new = node.output[0] + "/4d"
            old = node.output[0]
            node.output[0] = new
            cur, tail_from = new, old
            gr.reindex()
            continue
        if node.op_type in ("Mul", "Add"):
            dc = _data_and_const(gr, node)
            if dc is None or dc[0] != tail_from:
                return cur, tail_from, channels
            pc = _per_channel(dc[2], channels)
            if pc is None:
                return cur, tail_from, channels
            cname = gr.set_const(dc[1] + "/nchw", pc.reshape(1, channels, 1, 1))
            old = node.output[0]
            del node.input[:]
            node.input.extend([cur, cname])
            node.output[0] = old + "/4d"
            cur, tail_from = node.output[0], old
            gr.reindex()
            continue
        if node.op_type == "MatMul":
            wmat = gr.const(node.input[1])
            if wmat is None or node.input[0] != tail_from or wmat.ndim != 2 or wmat.shape[0] != channels:
                return cur, tail_from, channels
            k = wmat.shape[1]
            bias = np.zeros(k, np.float32)
            last = node
            add = gr.only_consumer(node.output[0])
            dc = _data_and_const(gr, add) if add is not None and add.op_type == "Add" else None
            if dc is not None and dc[0] == node.output[0] and dc[2].size == k:
                bias, last = dc[2].reshape(k).astype(np.float32), add
            wname = gr.set_const(node.input[1] + "/conv", wmat.T.reshape(k, channels, 1, 1).astype(np.float32))
            bname = gr.set_const(node.input[1] + "/conv_bias", bias)
            old = last.output[0]
            conv = helper.make_node("Conv", [cur, wname, bname], [old + "/4d"], name=(node.name or "dense") + "/conv",
                                    kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])
            idx = list(gr.g.node).index(node)
            gr.g.node.insert(idx, conv)
            gr.g.node.remove(node)
            if last is not node:
                gr.g.node.remove(last)
            cur, tail_from, channels = conv.output[0], old, k
            gr.reindex()
            continue
        return cur, tail_from, channels


def fold_batchnorm(model: Any) -> int:
    """Rewrites 2 and 3: per-channel Mul / Add constants folded into Convs. Returns how many folded."""
    gr = _Graph(model)
    folded = 0
    progress = True
    while progress:
        progress = False
        for node in list(gr.g.node):
            if node.op_type not in ("Mul", "Add"):
                continue
            dc = _data_and_const(gr, node)
            if dc is None:
                continue
            data, _, const = dc
            prod = gr.producer.get(data)
            if node.op_type == "Mul":
                target, through_relu = prod, False
                if prod is not None and prod.op_type == "Relu" and gr.only_consumer(prod.output[0]) is node:
                    target, through_relu = gr.producer.get(prod.input[0]), True
                    if target is not None and gr.only_consumer(target.output[0]) is not prod:
                        target = None
                elif prod is not None and gr.only_consumer(prod.output[0]) is not node:
                    target = None
                if target is None or target.op_type != "Conv" or gr.const(target.input[1]) is None:
                    continue
                w = gr.const(target.input[1])
                s = _per_channel(const, w.shape[0])
                if s is None or (through_relu and not np.all(s > 0)):
                    continue
                b = _conv_bias(gr, target)
                _replace_conv_params(gr, target, w * s.reshape(-1, 1, 1, 1), b * s)
                gr.bypass(node)
                folded += 1
                progress = True
                break
            # Add: into the Conv before (nothing between), else the unpadded Conv after.
            if prod is not None and prod.op_type == "Conv" and gr.only_consumer(prod.output[0]) is node \
                    and gr.const(prod.input[1]) is not None:
                w = gr.const(prod.input[1])
                t = _per_channel(const, w.shape[0])
                if t is None:
                    continue
                _replace_conv_params(gr, prod, w, _conv_bias(gr, prod) + t)
                gr.bypass(node)
                folded += 1
                progress = True
                break
            nxt = gr.only_consumer(node.output[0])
            if nxt is None or nxt.op_type != "Conv" or nxt.input[0] != node.output[0] \
                    or gr.const(nxt.input[1]) is None or any(_attr(nxt, "pads", [0]) or [0]) \
                    or _attr(nxt, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID") \
                    or (_attr(nxt, "group", 1) or 1) != 1:
                continue
            w = gr.const(nxt.input[1])
            t = _per_channel(const, w.shape[1])
            if t is None:
                continue
            b = _conv_bias(gr, nxt) + np.einsum("ochw,c->o", w.astype(np.float64), t.astype(np.float64)).astype(np.float32)
            _replace_conv_params(gr, nxt, w, b)
            gr.bypass(node)
            folded += 1
            progress = True
            break
    _drop_dead(gr)
    return folded


def _drop_dead(gr: _Graph) -> None:
    """Drop nodes whose outputs nobody reads, then initializers nobody reads."""
    while True:
        gr.reindex()
        dead = [n for n in gr.g.node
                if not any(o in gr.outputs or gr.consumers.get(o) for o in n.output)]
        if not dead:
            break
        for n in dead:
            gr.g.node.remove(n)
    used = {i for n in gr.g.node for i in n.input} | gr.outputs
    keep = [t for t in gr.g.initializer if t.name in used]
    if len(keep) != len(gr.g.initializer):
        del gr.g.initializer[:]
        gr.g.initializer.extend(keep)
        gr.inits = {t.name: t for t in keep}


def keep_used_opsets(model: Any) -> list[str]:
    """Drop opset imports of domains no node uses (the default domain stays). Returns those dropped."""
    used = {n.domain or "" for n in model.graph.node} | {""}
    dropped = [o.domain for o in model.opset_import if (o.domain or "") not in used]
    keep = [o for o in model.opset_import if (o.domain or "") in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return dropped


def clean(blob: bytes) -> bytes:
    """The fp32 rewrites above on serialized ONNX, checked."""
    import onnx

    model = onnx.load_from_string(blob)
    dense_to_conv(model)
    fold_batchnorm(model)
    keep_used_opsets(model)
    out = model.SerializeToString()
    check(out)
    return out


def tidy(blob: bytes) -> bytes:
    """After quantization: only the opset domains used, then the checks."""
    import onnx

    model = onnx.load_from_string(blob)
    keep_used_opsets(model)
    out = model.SerializeToString()
    check(out)
    return out


def check(blob: bytes) -> None:
    """onnx.checker with full_check (which runs shape inference) and strict shape inference with
    type checks; ExportError naming the first problem."""
    import onnx

    try:
        model = onnx.load_from_string(blob)
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise ExportError(f"the ONNX export fails onnx.checker / shape inference: {first_line(e)}") from None


__all__ = ["check", "clean", "dense_to_conv", "fold_batchnorm", "keep_used_opsets", "tidy"]
