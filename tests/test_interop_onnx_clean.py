"""export.onnx_clean on registered architectures (timm-style: parametrized over the registry): each
rewrite is exact, the graph passes onnx.checker (full_check) and strict shape inference, and the
book's CONV => RELU => BN nets lose their Mul nodes and their Flatten + Dense MatMuls."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CASES = {  # arch: (input shape, classes, ops that must be gone after cleaning)
    "lenet": ((28, 28, 1), 10, {"MatMul", "Shape", "Transpose"}),
    "minivggnet": ((32, 32, 3), 10, {"Mul", "MatMul", "Shape"}),
    "resnet-tiny": ((32, 32, 3), 10, set()),
    "crnn": ((32, 64, 1), 12, set()),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_cleaning_is_exact_and_checked(arch):
    import keras
    import onnx
    import onnxruntime as ort
    from edgecv.export import onnx_clean
    from edgecv.export.onnx import to_fp32
    from edgecv.train.nets.registry import create_model

    from edgecv.spec import ModelSpec

    shape, classes, gone = CASES[arch]
    keras.utils.set_random_seed(0)
    model = create_model(arch, input_shape=shape, classes=classes)
    rng = np.random.default_rng(1)
    for layer in model.layers:   # trained-looking BN statistics, so folding changes numbers
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    ctc = arch == "crnn"
    spec = ModelSpec(name=arch, task="captcha-ctc" if ctc else "classify", input_shape=shape,
                     colour="gray" if shape[2] == 1 else "bgr", preprocess=[{"op": "scale", "factor": 1 / 255}],
                     labels=() if ctc else [str(i) for i in range(classes)],
                     charset="abcdefghijk" if ctc else None)
    raw = to_fp32(model, spec)
    clean = onnx_clean.clean(raw)       # runs onnx_clean.check itself
    x = rng.random((3, *shape), dtype=np.float32)
    run = {k: ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for k, b in (("raw", raw), ("clean", clean))}
    np.testing.assert_allclose(run["clean"], run["raw"], atol=1e-5)
    graph = onnx.load_from_string(clean)
    assert [o.domain for o in graph.opset_import] == [""]
    assert not gone & {n.op_type for n in graph.graph.node}
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param   # batch still free


def test_check_names_the_problem():
    from edgecv.export.onnx_clean import check
    from onnx import TensorProto, helper

    from edgecv.errors import ExportError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    bad = helper.make_model(helper.make_graph([helper.make_node("Relu", ["missing"], ["y"])], "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ExportError, match="fails onnx.checker"):
        check(bad.SerializeToString())
