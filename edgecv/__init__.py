"""edgecv: train small CNNs, export them to TFLite / ONNX, run them on live video on edge devices.

The core package is light (NumPy, OpenCV): the ModelSpec contract, errors, the preprocessing chain,
the data registry and the CLI. Training (`edgecv.train`) and export (`edgecv.export`) need the
`[train]` / `[export]` extras; `edgecv.runtime` and `edgecv.apps` never import TensorFlow.
"""
import os

# OpenCV and its FFmpeg print warnings for every file they cannot open ("moov atom not found");
# edgecv reports those itself in one line, so keep the libraries quiet unless the user asks.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from .errors import EdgecvError  # noqa: E402
from .spec import ModelSpec  # noqa: E402

__version__ = "0.1.0"
__all__ = ["EdgecvError", "ModelSpec", "__version__"]
