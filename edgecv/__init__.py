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
# OpenCV reads its decode limit once, when it loads: set it before anything here imports cv2, so an
# image in a format whose header edgecv.images does not parse (any content OpenCV sniffs, whatever
# the file's name) still stops at edgecv's pixel limit instead of OpenCV's 1,073,741,824. edgecv's own
# variable wins over an inherited OpenCV one (a parent edgecv process exports its default).
if "EDGECV_MAX_IMAGE_PIXELS" in os.environ:
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = os.environ["EDGECV_MAX_IMAGE_PIXELS"]
else:
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "40000000")

from .errors import EdgecvError  # noqa: E402
from .spec import ModelSpec  # noqa: E402

__version__ = "0.1.0"
__all__ = ["EdgecvError", "ModelSpec", "__version__"]
