"""The project's exception hierarchy: every user mistake is one of these, turned into a one-line
message and a non-zero exit by the CLI (never a traceback)."""
from __future__ import annotations

import difflib
from typing import Iterable


class EdgecvError(Exception):
    """Base class: the message is meant for the user, as is."""

    exit_code = 2


class DataError(EdgecvError):
    """A data set, image or video that is missing, empty, corrupt or of the wrong layout."""


class DownloadError(DataError):
    """A download that failed, was cut short, or whose checksum does not match."""


class ModelSpecError(EdgecvError):
    """A ModelSpec that is missing, malformed or does not match its model."""


class ModelError(EdgecvError):
    """A model file that cannot be loaded or run."""


class BackendError(EdgecvError):
    """An inference backend that is not installed or cannot run a model."""


class SourceError(EdgecvError):
    """A video/camera/stream/image source that cannot be opened."""


class ExportError(EdgecvError):
    """An export that failed or did not pass its accuracy gate."""


class ConfigError(EdgecvError):
    """A bad option or configuration value."""


def unknown(kind: str, value: str, allowed: Iterable[str]) -> str:
    """The message for an unknown name: the allowed set and the close matches (STYLE.md 1, 10)."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(value, allowed, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {value!r}.{hint} Choose from: {', '.join(allowed)}."
