"""Safe file I/O for what users name on the command line: outputs written under a temporary name and
renamed into place (a failed or killed run leaves what was there), outputs that may not be an input,
bounded reads of user-given files and streams, and URLs shown without their credentials.

Every command's outputs go through here, so each guarantee holds in one place (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import ConfigError, EdgecvError

# Temporary outputs are hidden files beside their target: .NAME.edgecv-HOST-PID.part.SUFFIX (the
# suffix kept, because OpenCV's video writer picks its container from it). HOST is a short tag of
# this machine's name: a PID is only known dead on its own host (a shared or network folder, a
# container with its own PIDs), so only this host's leftovers are ever removed.
TMP_TAG = ".edgecv-"


def _host_tag() -> str:
    import hashlib
    import socket
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


HOST_TAG = _host_tag()
# A text file a user hands us (a config, a sources list) is small; a larger one is a mistake or hostile.
TEXT_LIMIT = 4 * 1024 * 1024


class OutputError(EdgecvError):
    """An output that cannot be written where asked, or that would overwrite an input."""


# --- credentials in URLs ----------------------------------------------------------------------------
# scheme://userinfo@host...: the userinfo is everything before the last @ of the authority
# (the authority ends at the first / ? # or whitespace after the last @ ... so a password with an @
# in it is hidden whole).
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<auth>[^\s/?#]*@)")


def redact_url(text: object) -> str:
    """`text` with the user:password@ of every URL in it replaced by ***@ (for logs, summaries, errors)."""
    s = str(text)
    if "@" not in s:
        return s
    return _URL.sub(lambda m: m.group("scheme") + "***@", s)


# --- links that lead nowhere ---------------------------------------------------------------------
def link_problem(path: str | os.PathLike) -> str | None:
    """'a symbolic link loop' or 'a broken symbolic link (to X)' when `path` is a link that does not
    reach a file, else None: said as such, not as "no such file"."""
    p = Path(path)
    if not os.path.islink(p):
        try:  # a loop further up the path
            p.resolve(strict=True)
        except RuntimeError:
            return "a symbolic link loop"
        except OSError as e:
            return "a symbolic link loop" if e.errno == errno.ELOOP else None
        return None
    try:
        p.resolve(strict=True)
    except RuntimeError:
        return "a symbolic link loop"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"a broken symbolic link (to {os.readlink(p)})"
    return None


# --- same file ----------------------------------------------------------------------------------
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when a and b name the same file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False


def is_special(path: str | os.PathLike) -> bool:
    """An existing output that is not a regular file (a FIFO, /dev/stdout, /dev/null): written in place,
    never replaced by a rename."""
    try:
        import stat
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_output(path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output path that cannot be written or that names one of `inputs`, before anything
    is opened. Nothing is created here; a missing folder is fine if it can be made. Raises OutputError."""
    p = Path(path)
    shown = f"{flag} {p}"
    if str(path) == "" or p.name in ("", ".", ".."):
        raise OutputError(f"{shown}: not a file name")
    if len(p.name.encode(errors="surrogateescape")) > 255:
        raise OutputError(f"{flag}: file name longer than 255 bytes")
    for inp in inputs:
        if inp is not None and same_file(p, inp):
            raise OutputError(f"cannot write {p}: {flag} is the same file as the input {inp}; "
                              "choose another output path")
    if p.is_symlink() and (problem := link_problem(p)):
        raise OutputError(f"cannot write {p}: {problem}")
    if p.is_dir():
        raise OutputError(f"cannot write {p}: {flag} is a folder")
    if p.exists():
        if is_special(p):
            if not os.access(p, os.W_OK):
                raise OutputError(f"cannot write {p}: permission denied")
            return p
    # The nearest existing ancestor must be a writable folder.
    parent = p.parent
    while not parent.exists():
        if parent.is_symlink():
            raise OutputError(f"cannot write {p}: {parent} is a broken link")
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {p}: {parent} is not writable")
    return p


# --- temporary outputs renamed into place -----------------------------------------------------------
def _temp_base(p: Path) -> str:
    # A name near NAME_MAX (255 bytes) would not fit with the tag added: its temporary is shortened.
    return p.name if len(p.name.encode()) <= 180 else p.name.encode()[:180].decode(errors="ignore")


def output_target(path: str | os.PathLike) -> Path:
    """The file an output replaces: a symbolic link's target (the link stays a link), else the path."""
    p = Path(path)
    if p.is_symlink():
        try:
            return p.resolve(strict=True)
        except (OSError, RuntimeError):
            return p
    return p


def temp_path(path: str | os.PathLike) -> Path:
    """The hidden temporary name of `path` for this process."""
    p = Path(path)
    return p.with_name(f".{_temp_base(p)}{TMP_TAG}{HOST_TAG}-{os.getpid()}.part{p.suffix[:16]}")


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of `path` left by processes that no longer run (a SIGKILL); returns them."""
    p = Path(path)
    removed = []
    try:
        candidates = list(p.parent.glob(f".{_glob_escape(_temp_base(p))}{TMP_TAG}*.part*"))
    except OSError:
        return removed
    for c in candidates:
        m = re.search(re.escape(TMP_TAG) + re.escape(HOST_TAG) + r"-(\d+)\.part", c.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        try:
            c.unlink()
            removed.append(c)
        except OSError:
            pass
    return removed


def _glob_escape(name: str) -> str:
    import glob
    return glob.escape(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make a finished temporary file the output: data to disk, then one rename, then the folder's entry."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:  # the file replaced keeps its permissions
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    except OSError:
        pass
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def discard(tmp: str | os.PathLike | None) -> None:
    if tmp is None:
        return
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `path` whole or not at all (a full disk or a kill leaves the earlier file)."""
    p = output_target(path)
    if is_special(p):
        with open(p, "wb") as f:
            f.write(data)
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(p)
    tmp = temp_path(p)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        commit(tmp, p)
    except BaseException:
        discard(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` or none of it: a short write (a full disk) is cut back to where this call
    started and raised as OSError, so a reader never sees half a record."""
    view = memoryview(data)
    start = None
    try:
        start = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:  # a pipe or a terminal: no position to cut back to
        pass
    done = 0
    try:
        while done < len(view):
            n = os.write(fd, view[done:])
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += n
    except OSError:
        if start is not None and done:
            try:
                os.ftruncate(fd, start)
                os.lseek(fd, start, os.SEEK_SET)
            except OSError:
                pass
        raise


# --- temporary folders that a signal cannot orphan -------------------------------------------------
@contextlib.contextmanager
def temp_folder(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A fresh folder in `parent`, removed with its contents when the block ends, however it ends.

    Ctrl+C and SIGTERM (which edgecv turns into an exception) are held while the folder is made, so
    neither can land between its creation and the `try` that removes it; a signal that came in
    meanwhile is delivered on the first line inside the block. Outside the main thread (where Python
    runs no signal handler) the mask is left alone."""
    held = {signal.SIGINT, signal.SIGTERM}
    main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held) if main else None
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except BaseException:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    try:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- bounded reads ------------------------------------------------------------------------------
def read_limited(path: str | os.PathLike, limit: int, what: str,
                 error: type[Exception] = ConfigError) -> bytes:
    """Read a user-given file (or FIFO, or device) of at most `limit` bytes; `error` (ConfigError by
    default) beyond it or when it cannot be read, one line naming `what` and the path. The limit holds
    for things whose size stat() does not know (/dev/zero, a pipe)."""
    p = Path(path)
    name = f"{what} {p}" if what else str(p)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise error(f"{name}: {size:,} bytes is more than the {limit:,}-byte limit")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except IsADirectoryError:
        raise error(f"{name}: is a folder") from None
    except PermissionError:
        raise error(f"{name}: permission denied") from None
    except OSError as e:
        raise error(f"{name}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise error(f"{name}: more than the {limit:,}-byte limit")
    return data


def read_text_limited(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT) -> str:
    data = read_limited(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None


def read_stream_limited(stream: BinaryIO | io.BufferedReader, limit: int, what: str) -> bytes:
    """Read a stream (stdin) to its end, but never more than `limit` bytes (ConfigError)."""
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ConfigError(f"{what}: more than the {limit:,}-byte limit")
    return b"".join(chunks)


# --- argparse types -------------------------------------------------------------------------------
def finite_float(minimum: float | None = None, maximum: float | None = None, *, above: bool = False):
    """An argparse type: a finite float within [minimum, maximum] (or > minimum with above=True).
    inf, nan and values out of range are refused at parse time, with one line."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {minimum:g}; got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}; got {text}")
        return value

    parse.__name__ = "number"
    return parse


def oserror_line(e: OSError) -> str:
    """One line for an environment error: what failed, on which file."""
    what = e.strerror or str(e) or type(e).__name__
    names = [n for n in (e.filename, e.filename2) if n is not None]
    where = " -> ".join(str(n) for n in names)
    return f"{where}: {what}" if where else what



def int_at_least(minimum: int, why: str = ""):
    """An argparse type: an integer >= minimum (`why` says what a smaller one would do)."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{' ' + why if why else ''}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def int_at_most(maximum: int, why: str = ""):
    """An argparse type: an integer <= maximum (a larger one would exhaust threads or memory); the
    lower bound is left to the command's own check."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}{' ' + why if why else ''}; got {value}")
        return value

    parse.__name__ = "integer"
    return parse


# --- ending a process that does not stop -----------------------------------------------------------
_exit_armed = False


def exit_later(seconds: float, message: str, code: int) -> None:
    """Arm (once per process) a timer that prints `edgecv: error: MESSAGE` and ends the process with
    `code` if it is still running `seconds` from now: for a stop that cannot complete (a write blocked
    on a pipe nobody reads, a long call in native code). Outputs are temporaries until complete, so
    this leaves the earlier files. Safe to call from a signal handler."""
    global _exit_armed
    if _exit_armed:
        return
    _exit_armed = True

    def fire() -> None:
        os.write(2, f"edgecv: error: {message}\n".encode())
        os._exit(code)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
