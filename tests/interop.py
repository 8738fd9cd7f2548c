"""Helpers for the interop tests (tests/test_interop_*.py): the real consumers of edgecv's
artefacts (MediaPipe's ImageClassifier and metadata reader) and edgecv's own answer to compare with."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgecv.preprocess import apply_chain


def need(module: str):
    """The consumer itself: a missing one is a broken test environment (make test installs it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not installed ({e}); `make test` installs the interop consumers")


def metadata_displayer():
    """MediaPipe's official TFLite Metadata reader. Its module imports a pybind extension that the
    mediapipe wheels lack (mediapipe.tasks.cc...._pywrap_metadata_version, used only by the writer's
    version check); a stand-in for that one name lets the reader (the C++ flatbuffers parser in
    libmediapipe with the schema's .fbs) run as shipped."""
    need("mediapipe")
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    if name not in sys.modules:
        try:
            __import__(name)
        except ImportError:
            parts = name.split(".")
            for i in range(3, len(parts) + 1):
                sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    from mediapipe.tasks.python.metadata import metadata

    return metadata.MetadataDisplayer


def mediapipe_top1(path: Path, images_rgb: np.ndarray) -> list[str]:
    """MediaPipe ImageClassifier's top label for each HxWx3 uint8 RGB image (already at the model's
    size: its own resize is nearest-neighbour)."""
    mp = need("mediapipe")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    out = []
    with vision.ImageClassifier.create_from_options(opts) as clf:
        for img in images_rgb:
            r = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
            out.append(r.classifications[0].categories[0].category_name)
    return out


def edgecv_top1(path: Path, images_bgr: list[np.ndarray], **kw) -> np.ndarray:
    """edgecv's answer for each BGR image: the artefact's own spec chain, its backend, edgecv.decode."""
    from edgecv.runtime.backends import open_backend

    from edgecv import decode
    from edgecv.resolve import resolve

    ref = resolve(path)
    x = apply_chain(images_bgr, ref.spec.preprocess, ref.spec.input_shape)
    with open_backend(ref.path, ref.spec, **kw) as be:
        y = be.run(x)
    return np.array(ref.spec.labels)[decode.indices(ref.spec, y, len(x))]
