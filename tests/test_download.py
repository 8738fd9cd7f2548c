"""The real download path against HTTP servers on 127.0.0.1: the shared data as a mirror, a corrupt
file, a connection cut halfway, and archives whose members try to escape their folder."""
from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from edgecv.data.registry import get as get_dataset
from edgecv.data.download import download, extract_zip, fetch_dataset, sha256_file
from edgecv.errors import DataError, DownloadError

from conftest import assert_clean_error, run_cli


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture()
def serve():
    servers = []

    def start(directory: Path, handler=Quiet) -> str:
        h = functools.partial(handler, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECV_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGECV_DATA", raising=False)
    return tmp_path / "cache"


def test_fetch_from_loopback_mirror_verifies_and_caches(serve, cache, data_dir):
    url = serve(data_dir)
    root = fetch_dataset("mnist", mirror_url=url, progress=False)
    npz = root / "mnist.npz"
    assert npz.stat().st_size == (data_dir / "mnist/mnist.npz").stat().st_size
    assert sha256_file(npz) == sha256_file(data_dir / "mnist/mnist.npz")
    assert not list(root.glob("*.part"))
    # The loader now reads the cached copy (no EDGECV_DATA) without downloading again.
    from edgecv.data import load
    ds = load("mnist")
    assert len(ds) == 70000 and ds.label_names == list("0123456789")


def test_cli_fetch_file_resources_with_progress(serve, cache, data_dir):
    url = serve(data_dir)
    proc = run_cli("data", "fetch", "yunet", "--mirror", url, env={"EDGECV_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr.decode()
    onnx = cache / "models" / "face_detection_yunet_2023mar.onnx"
    assert sha256_file(onnx) == sha256_file(data_dir / "models/face_detection_yunet_2023mar.onnx")
    assert b"100%" in proc.stderr  # the progress report reached its end


def test_corrupt_download_is_rejected_and_leaves_nothing(serve, tmp_path, data_dir):
    bad = tmp_path / "srv" / "models"
    bad.mkdir(parents=True)
    data = bytearray((data_dir / "models/face_detection_yunet_2023mar.onnx").read_bytes())
    data[1000] ^= 0xFF  # one flipped byte
    (bad / "face_detection_yunet_2023mar.onnx").write_bytes(bytes(data))
    url = serve(tmp_path / "srv")
    dest = tmp_path / "out" / "yunet.onnx"
    res = [r for r in get_dataset("yunet").resources][0]
    with pytest.raises(DownloadError, match="SHA-256"):
        download(f"{url}/models/face_detection_yunet_2023mar.onnx", dest, res.sha256, res.size, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


class CutOnce(Quiet):
    """Sends the full Content-Length but only half the body on the first request."""
    calls = 0

    def copyfile(self, source, outputfile):
        CutOnce.calls += 1
        if CutOnce.calls == 1:
            data = source.read()
            outputfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().copyfile(source, outputfile)


def test_download_cut_halfway_is_retried_never_left_half(serve, tmp_path, data_dir):
    CutOnce.calls = 0
    url = serve(data_dir, CutOnce)
    dest = tmp_path / "smile.jpg"
    src = data_dir / "videos/smile.jpg"
    download(f"{url}/videos/smile.jpg", dest, (sha256_file(src),), progress=False)
    assert CutOnce.calls >= 2
    assert dest.read_bytes() == src.read_bytes()


def test_leftover_part_file_is_resumed_or_restarted(serve, tmp_path, data_dir):
    """http.server ignores Range (answers 200): the .part is then rewritten from the start."""
    url = serve(data_dir)
    dest = tmp_path / "smile.jpg"
    src = data_dir / "videos/smile.jpg"
    dest.with_name("smile.jpg.part").write_bytes(b"garbage that is not the file's start")
    download(f"{url}/videos/smile.jpg", dest, (sha256_file(src),), progress=False)
    assert dest.read_bytes() == src.read_bytes()


def test_http_error_is_a_clear_error(serve, tmp_path):
    url = serve(tmp_path)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{url}/nope.bin", tmp_path / "x", progress=False)


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("evil", ["../escape.txt", "a/../../escape.txt", "/abs/escape.txt", "C:/escape.txt"])
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, evil):
    z = _zip(tmp_path / "evil.zip", {"ok/a.txt": b"fine", evil: b"pwned"})
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(DataError, match="escape"):
        extract_zip(z, dest)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "dest" / "escape.txt").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    z = _zip(tmp_path / "link.zip", {"a.txt": b"x"}, symlink="link")
    with pytest.raises(DataError, match="symbolic link"):
        extract_zip(z, tmp_path / "dest")


def test_extract_members_prefix_is_stripped(tmp_path):
    z = _zip(tmp_path / "repo.zip", {"repo-main/data/x/1.txt": b"1", "repo-main/README": b"r"})
    out = extract_zip(z, tmp_path / "d", members="repo-main/data/")
    assert (out / "x" / "1.txt").read_bytes() == b"1"
    assert not (out / "README").exists()


def test_zip_dataset_through_loader_rejects_slip(tmp_path):
    z = _zip(tmp_path / "evil.zip", {"cats/1.jpg": b"x", "../../evil.jpg": b"y"})
    proc = run_cli("eval", "nonexistent-model", "--data", str(z))
    assert_clean_error(proc)


def test_unknown_dataset_suggests_close_match():
    proc = run_cli("data", "fetch", "mnsit")
    assert_clean_error(proc, "did you mean 'mnist'|Did you mean 'mnist'")


def test_missing_from_mirror_is_clear(tmp_path):
    proc = run_cli("data", "path", "smiles", env={"EDGECV_DATA": str(tmp_path)})
    assert_clean_error(proc, "not in EDGECV_DATA")
