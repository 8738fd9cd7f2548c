"""edgecv: train small CNNs, export them to TFLite / ONNX, run them on live video on edge devices.

The core package is light (NumPy, OpenCV): the ModelSpec contract, errors, the preprocessing chain,
the data registry and the CLI. Training (`edgecv.train`) and export (`edgecv.export`) need the
`[train]` / `[export]` extras; `edgecv.runtime` and `edgecv.apps` never import TensorFlow.
"""
from .errors import EdgecvError
from .spec import ModelSpec

__version__ = "0.1.0"
__all__ = ["EdgecvError", "ModelSpec", "__version__"]
