"""The one way edgecv loads a .keras file: Keras' safe mode, so a file cannot run code on load.

Keras is imported lazily (an edge box has none: then the message names the extra)."""
from __future__ import annotations

import os
from typing import Any

from .errors import ModelError
from .modelfile import first_line


def load_keras_model(path: str | os.PathLike, compile: bool = False) -> Any:
    """Load `path` with safe_mode=True. Raises ModelError naming a refused Lambda layer (and safe
    mode), or saying why Keras could not load the file."""
    try:
        import keras
    except ImportError:
        raise ModelError(f"{path}: running a .keras model needs Keras: pip install 'edgecv[train]'") from None
    try:
        return keras.saving.load_model(str(path), compile=compile, safe_mode=True)
    except Exception as e:  # Keras raises ValueError/TypeError/OSError for bad or unsafe files
        msg = str(e)
        if "Lambda" in msg or "safe_mode" in msg:
            raise ModelError(f"{path}: the model contains a Lambda layer (arbitrary Python code), which "
                             "edgecv refuses to load (Keras safe mode); rebuild it with standard or registered "
                             "custom layers") from None
        raise ModelError(f"{path}: Keras cannot load this model ({first_line(e)})") from None
