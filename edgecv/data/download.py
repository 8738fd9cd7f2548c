"""Download, verify, cache and safely extract the registry's files.

- Downloads stream to `NAME.part` and resume with an HTTP Range request when a `.part` is left
  over; the final name appears only after the size and SHA-256 check (rename), so a half file
  never looks complete.
- Archives are extracted member by member into a temporary folder, refusing absolute paths,
  `..` components and links (zip slip), then moved into place.
- `EDGECV_DATA=DIR` reads a local mirror and downloads nothing; `EDGECV_DATA_URL=URL` (or
  `--mirror`) downloads from a mirror that has the shared data layout instead of the public URLs.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import DataError, DownloadError
from ..safeio import temp_folder
from .registry import DatasetInfo, Resource, get

CHUNK = 1 << 16
TIMEOUT_S = 30


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECV_CACHE") or Path.home() / ".cache" / "edgecv")


def mirror_dir() -> Path | None:
    d = os.environ.get("EDGECV_DATA")
    return Path(d).expanduser() if d else None


def _complete_marker(root: Path, name: str) -> Path:
    return root / f".edgecv-complete-{name}"


def dataset_root(name: str, fetch: bool = True, progress: bool = True) -> Path:
    """The folder holding data set `name`: the EDGECV_DATA mirror, else the cache (fetched if needed)."""
    info = get(name)
    mirror = mirror_dir()
    if mirror is not None:
        root = mirror / info.root
        if not root.exists():
            raise DataError(f"data set {name!r} is not in EDGECV_DATA={mirror} (expected {root})")
        return root
    root = cache_dir() / info.root
    if not _complete_marker(root, name).exists():
        if not fetch:
            raise DataError(f"data set {name!r} is not downloaded; run: edgecv data fetch {name}")
        fetch_dataset(name, progress=progress)
    return root


def fetch_dataset(name: str, mirror_url: str | None = None, progress: bool = True,
                  force: bool = False) -> Path:
    """Download and verify every resource of a data set into the cache; return its folder."""
    info = get(name)
    mirror_url = mirror_url or os.environ.get("EDGECV_DATA_URL")
    cache = cache_dir()
    root = cache / info.root
    marker = _complete_marker(root, name)
    if marker.exists() and not force:
        return root
    from .lock import cache_lock
    with cache_lock(cache / ".locks" / f"{name}.lock"):
        if marker.exists() and not force:  # another process fetched it while we waited
            return root
        return _fetch_locked(info, name, root, marker, cache, mirror_url, progress, force)


def _fetch_locked(info, name: str, root: Path, marker: Path, cache: Path, mirror_url: str | None,
                  progress: bool, force: bool) -> Path:
    archives: dict[str, Path] = {}
    for res in info.resources:
        if mirror_url:
            url = mirror_url.rstrip("/") + "/" + res.relpath
            if res.archive:
                raise DownloadError(
                    f"the mirror serves {name!r} as a folder, not an archive; point EDGECV_DATA at a copy instead")
        else:
            url = res.url
        if res.archive:
            zpath = archives.get(url)
            if zpath is None:
                zpath = cache / "downloads" / (hashlib.sha1(url.encode()).hexdigest()[:16] + ".zip")
                if not zpath.exists() or force:
                    download(url, zpath, res.sha256, res.size, progress=progress)
                archives[url] = zpath
            extract_zip(zpath, root / res.dest, members=res.members)
        else:
            dest = cache / res.relpath
            if not dest.exists() or force:
                download(url, dest, res.sha256, res.size, progress=progress)
    verify_counts(info, root)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
    return root


def verify_counts(info: DatasetInfo, root: Path) -> None:
    for sub, minimum in info.counts.items():
        folder = root / sub
        n = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
        if n < minimum:
            raise DownloadError(f"{info.name}: {folder} holds {n} files, expected at least {minimum}")


class Progress:
    """A one-line progress bar on a terminal; a line every 10% otherwise (CI logs)."""

    def __init__(self, label: str, total: int | None, enabled: bool = True):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = sys.stderr.isatty()
        self.done, self.last_pct, self.t0 = 0, -10, time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        mib = self.done / 2**20
        rate = mib / max(time.monotonic() - self.t0, 1e-6)
        if self.total:
            pct = 100 * self.done / self.total
            if self.tty:
                bar = "#" * int(pct / 4)
                print(f"\r{self.label} [{bar:<25}] {pct:5.1f}% {mib:.1f} MiB {rate:.1f} MiB/s", end="", file=sys.stderr)
            elif pct >= self.last_pct + 10:
                self.last_pct = int(pct // 10 * 10)
                print(f"{self.label}: {pct:.0f}% ({mib:.1f} MiB)", file=sys.stderr)
        elif self.tty:
            print(f"\r{self.label} {mib:.1f} MiB {rate:.1f} MiB/s", end="", file=sys.stderr)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def download(url: str, dest: Path, sha256: tuple[str, ...] = (), size: int | None = None,
             progress: bool = True, retries: int = 3) -> Path:
    """Fetch `url` to `dest`: resume a `.part`, verify size and SHA-256, then rename into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "edgecv"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                resumed = have and resp.status == 206
                if not resumed:
                    have = 0
                length = resp.headers.get("Content-Length")
                total = (have + int(length)) if length else size
                # A server that keeps sending (no Content-Length) must not fill the disk: at most twice
                # the registry's size (a listed alternative may differ a little), else MAX_DOWNLOAD.
                limit = total if length else (2 * size if size else MAX_DOWNLOAD)
                bar = Progress(dest.name, total, progress)
                bar.update(have)
                with open(part, "ab" if resumed else "wb") as f:
                    got = have
                    while chunk := resp.read(CHUNK):
                        got += len(chunk)
                        if got > limit:
                            f.close()
                            part.unlink()
                            raise TooLong(f"{url}: the server sent more than the {limit:,} bytes expected")
                        f.write(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
                bar.close()
                if total is not None and part.stat().st_size < total:
                    raise DownloadError(f"{url}: connection closed after {part.stat().st_size} of {total} bytes")
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:      # our .part is already complete (or bigger): start over
                part.unlink()
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except TooLong as e:
            raise DownloadError(str(e)) from None
        except OSError as e:
            if e.errno in LOCAL_ERRNOS and not isinstance(e, urllib.error.URLError):  # ours, not the network's
                raise DownloadError(f"cannot write {part}: {e.strerror} (the partial download stays, to be "
                                    "resumed)") from None
            last_error = e
            time.sleep(min(2 ** attempt * 0.2, 2))
        except DownloadError as e:
            last_error = e
            time.sleep(min(2 ** attempt * 0.2, 2))
    else:
        raise DownloadError(f"{url}: download failed after {retries} tries ({last_error})")
    got = part.stat().st_size
    if size is not None and got != size and not sha256:
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {size}")
    if sha256:
        digest = sha256_file(part)
        if digest not in sha256:
            part.unlink()  # a corrupt file must not be resumed from either
            raise DownloadError(f"{url}: SHA-256 {digest[:16]}... does not match the expected "
                                f"{' or '.join(s[:16] + '...' for s in sha256)}")
    os.replace(part, dest)
    return dest


class TooLong(Exception):
    """The server sent more than expected (not retried)."""


# A download with no known size (no registry size, no Content-Length) stops here.
MAX_DOWNLOAD = 16 * 1024**3
# Errors of the local disk, not of the network: retrying cannot help.
LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_member_path(name: str) -> PurePosixPath:
    """The member's relative path, or DataError if it would land outside the target folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DataError(f"archive member {name!r} would escape its folder; refusing the archive")
    return p


def extract_zip(zpath: Path, dest: Path, members: str = "") -> Path:
    """Extract the members under `members` (a folder prefix, stripped) into `dest`, safely and atomically."""
    dest = Path(dest)
    try:
        z = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile:
        raise DataError(f"{zpath}: not a zip archive or corrupt") from None
    with z:
        infos = [i for i in z.infolist() if i.filename.startswith(members)]
        if not infos:
            raise DataError(f"{zpath}: no members under {members!r}")
        for info in infos:               # check all before writing any
            safe_member_path(info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise DataError(f"archive member {info.filename!r} is a symbolic link; refusing the archive")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A zip's sizes are the archive's claim; a claim larger than the free space fails now, not
        # after filling the disk (the copy below also stops at the disk's end: the temp folder goes).
        need = sum(i.file_size for i in infos)
        free = shutil.disk_usage(dest.parent).free
        if need > free:
            raise DataError(f"{zpath}: extracting needs {need / 1e6:,.0f} MB and {dest.parent} has "
                            f"{free / 1e6:,.0f} MB free")
        with temp_folder(dest.parent, ".extract-") as tmp:
            for info in infos:
                rel = safe_member_path(info.filename[len(members):])
                if not rel.parts:
                    continue
                target = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with z.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                except OSError as e:
                    raise DataError(f"cannot extract {zpath} into {dest.parent}: {e.strerror or e} "
                                    "(the partial extraction was removed)") from None
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise DataError(f"{zpath}: member {info.filename!r} is corrupt ({e})") from None
            dest.mkdir(parents=True, exist_ok=True)
            for child in tmp.iterdir():
                final = dest / child.name
                if final.exists():
                    shutil.rmtree(final) if final.is_dir() else final.unlink()
                os.replace(child, final)
    return dest


def resource_path(name: str, relpath: str, fetch: bool = True) -> Path:
    """Path of one file resource (e.g. a video) of a data set, fetched if needed (DataError instead
    when fetch is false)."""
    info = get(name)
    res: Resource | None = next((r for r in info.resources if r.relpath == relpath), None)
    if res is None:
        raise DataError(f"{name}: no file {relpath!r}")
    mirror = mirror_dir()
    if mirror is not None:
        p = mirror / relpath
        if not p.exists():
            raise DataError(f"{relpath} is not in EDGECV_DATA={mirror}")
        return p
    p = cache_dir() / relpath
    if not p.exists():
        if not fetch:
            raise DataError(f"{relpath} is not downloaded")
        mirror_url = os.environ.get("EDGECV_DATA_URL")
        url = mirror_url.rstrip("/") + "/" + relpath if mirror_url else res.url
        download(url, p, res.sha256, res.size)
    return p
