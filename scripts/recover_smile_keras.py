"""Rebuild the shipped smile model's Keras source (a run directory: model.keras + spec.json) from
edgecv/zoo/smile.onnx, the fp32 export of it, so the zoo can be re-exported (TFLite Metadata, the
uint8-rgb variant, the cleaned ONNX) without retraining and with the same weights.

The original run (runs/smile, card edgecv/zoo/smile.md) is not in the repository. The ONNX graph
holds every weight: Conv kernels (OIHW -> HWIO), Dense matrices (already in Keras' NHWC flatten
order), and each BatchNormalization as a Mul and an Add with constants, which become gamma and beta
with moving mean 0 and moving variance 1 - epsilon (so sqrt(var + eps) is exactly 1). The script
checks the rebuilt model against ONNX Runtime on real SMILES faces before it writes anything.

    EDGECV_DATA=../shared/data python scripts/recover_smile_keras.py OUT_RUN_DIR
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "edgecv" / "zoo" / "smile.onnx"


def onnx_weights(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]],
                                      list[tuple[np.ndarray, np.ndarray]]]:
    """(conv kernels + biases, dense matrices + biases, BN (scale, shift)) in graph order."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    convs, dense, bns = [], [], []
    nodes = list(m.graph.node)
    for i, n in enumerate(nodes):
        if n.op_type == "Conv":
            convs.append((init[n.input[1]].transpose(2, 3, 1, 0), init[n.input[2]]))
        elif n.op_type == "MatMul":
            bias = init[nodes[i + 1].input[1]]
            dense.append((init[n.input[1]], bias))
        elif n.op_type == "Mul" and n.input[1] in init and nodes[i + 1].op_type == "Add":
            bns.append((init[n.input[1]].reshape(-1), init[nodes[i + 1].input[1]].reshape(-1)))
    return convs, dense, bns


def rebuild(path: Path = SOURCE):
    import keras
    from edgecv.train.nets.registry import create_model

    convs, dense, bns = onnx_weights(path)
    model = create_model("minivggnet", input_shape=(32, 32, 1), classes=2)
    layers = model.layers
    it_conv, it_dense, it_bn = iter(convs), iter(dense), iter(bns)
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights(list(next(it_conv)))
        elif isinstance(layer, keras.layers.Dense):
            layer.set_weights(list(next(it_dense)))
        elif isinstance(layer, keras.layers.BatchNormalization):
            scale, shift = next(it_bn)
            eps = layer.epsilon
            layer.set_weights([scale, shift, np.zeros_like(scale), np.full_like(scale, 1.0 - eps)])
    return model


def main(out: str) -> int:
    import onnxruntime as ort

    from edgecv.data import load, split
    from edgecv.modelfile import load_spec
    from edgecv.preprocess import apply_chain

    spec = load_spec(SOURCE)
    model = rebuild()
    ds = split(load("smiles"), "test", spec.data.get("split"))
    x, _ = ds.subset(np.arange(min(len(ds), 500))).load_arrays(
        lambda imgs: apply_chain(imgs, spec.preprocess, spec.input_shape))
    ref = ort.InferenceSession(str(SOURCE), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = model.predict(x, batch_size=250, verbose=0)
    diff = float(np.abs(ref - got).max())
    same = float((ref.argmax(1) == got.argmax(1)).mean())
    print(f"rebuilt vs smile.onnx on {len(x)} SMILES test faces: max |dp| {diff:.2e}, top-1 agreement {same:.2%}")
    if diff > 1e-4 or same < 1.0:
        print("the rebuilt model does not reproduce smile.onnx; nothing written")
        return 1
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    base = spec.replace(quantization="fp32", extra={}, source_hash=None,
                        metrics={k: v for k, v in spec.metrics.items() if k != "export"})
    base.save(run / "spec.json")
    print(f"wrote {run}/model.keras and spec.json")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
