"""The `edgecv` command. Each layer adds its own sub-commands; none imports TensorFlow until a
command that needs it runs, so `edgecv smile` starts fast on a box without TensorFlow."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Callable, Sequence

from .errors import EdgecvError
from .safeio import exit_later, oserror_line

# OpenCV's decode limit (OPENCV_IO_MAX_IMAGE_PIXELS) is set in edgecv/__init__.py, before any cv2 import.

# name -> module whose `add_parser(subparsers)` registers it. A module that fails to import (a
# layer whose extra is not installed) leaves its commands out with a note in --help.
COMMAND_MODULES = (
    "edgecv.data.cli",
    "edgecv.train.cli",
    "edgecv.apps.evaluate",
    "edgecv.export.cli",
    "edgecv.runtime.cli",
    "edgecv.apps.smile",
    "edgecv.apps.captcha",
    "edgecv.apps.bench.cli",
    "edgecv.apps.batch",
)

EPILOG = """examples:
  edgecv data fetch videos
  edgecv train classify --arch lenet --data mnist --epochs 5 --out runs/mnist-lenet
  edgecv eval runs/mnist-lenet --data mnist --split test
  edgecv export runs/mnist-lenet --format tflite --quant int8 --out out/lenet-int8.tflite
  edgecv smile --source video:smile.mp4 --no-display --save out/smile.mp4
"""


# Optional dependencies -> the extra that installs them (an edge box has none of these).
EXTRAS = {"tensorflow": "train", "keras": "train", "h5py": "train", "sklearn": "train", "matplotlib": "train",
          "tf2onnx": "export", "onnx": "export", "captcha": "captcha",
          "ray": "cluster", "pyarrow": "cluster"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line (no traceback), like every other error."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="edgecv", description=__doc__.split("\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"edgecv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    missing = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                continue  # that layer is not written yet
            missing.append(f"{name.split('.')[-2]} ({e.name} not installed)")
            continue
        module.add_parser(sub)
    if missing:
        parser.epilog = (parser.epilog or "") + "\nunavailable: " + ", ".join(missing) + "\n"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    previous = _terminate_like_interrupt()
    try:
        return _run(func, args)
    finally:
        if previous is not None:  # main() called in-process (tests, an embedding program): put it back
            signal.signal(signal.SIGTERM, previous)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """The command, with every error turned into one line and an exit code."""
    try:
        code = int(func(args) or 0)
        try:
            sys.stdout.flush()  # a full disk on stdout is reported here, not as a traceback at exit
        except OSError as e:
            if isinstance(e, BrokenPipeError):
                raise
            _drop_stdout()
            print(f"edgecv: error: stdout: {oserror_line(e)}", file=sys.stderr)
            return 1
        return code
    except EdgecvError as e:
        print(f"edgecv: error: {e}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"edgecv: error: this command needs {e.name}, which the base install leaves out; "
              f"install it with: pip install 'edgecv[{extra}]'", file=sys.stderr)
        return 2
    except Terminated:
        print("edgecv: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("edgecv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `edgecv ... | head` closed our stdout: not an error of ours.
        _drop_stdout()
        return 0
    except OSError as e:
        # The environment, not a bug: no space, no permission, a missing folder, a read-only disk.
        # One line naming the file and the reason, and a non-zero exit (never a traceback).
        where = "stdout: " if _drop_stdout_if_broken() and e.filename is None else ""
        print(f"edgecv: error: {where}{oserror_line(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("edgecv: error: out of memory", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if "can't start new thread" not in str(e):
            raise
        print("edgecv: error: cannot start another thread (the process or user thread limit is reached)",
              file=sys.stderr)
        return 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl+C, so `finally` blocks and context managers run
    (an export's temporary folder is removed; a default SIGTERM left it behind)."""


# A command that cannot reach Python code to unwind (a long call in native code) ends anyway this long
# after SIGTERM.
TERM_GRACE_S = 10.0


def _terminate_like_interrupt():
    """SIGTERM unwinds like SIGINT; returns the handler it replaced (None when it left it alone).
    Commands that handle signals themselves (`edgecv run`) replace this handler while they run."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None  # someone (an embedding program) chose a handler: keep it

    def on_term(signum, frame) -> None:
        exit_later(TERM_GRACE_S, f"did not stop within {TERM_GRACE_S:g} s of SIGTERM; exiting", 143)
        raise Terminated()

    return signal.signal(signal.SIGTERM, on_term)


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _drop_stdout_if_broken() -> bool:
    """True (and stdout dropped) when stdout cannot take what is buffered for it."""
    try:
        sys.stdout.flush()
        return False
    except (OSError, ValueError):
        _drop_stdout()
        return True
