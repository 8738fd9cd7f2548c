"""The wheel a user installs holds every module and shipped file of the source tree: pyproject.toml
lists its packages by hand (so `train/`, `export/`, ... are not installed as top-level packages),
and a module in a folder missing from that list would be lost only after installation."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> its package in the wheel (pyproject's package-dir)
ROOTS = {"edgecv": "edgecv", "train": "edgecv/train", "export": "edgecv/export", "runtime": "edgecv/runtime",
         "apps": "edgecv/apps"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(REPO)], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    (whl,) = out.glob("edgecv-*.whl")
    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


def test_wheel_holds_every_module_and_shipped_file(wheel_names):
    expected = set()
    for src, pkg in ROOTS.items():
        for path in (REPO / src).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            rel = path.relative_to(REPO / src)
            if src == "edgecv" and rel.parts[0] in ROOTS:
                continue
            if path.suffix == ".py" or path.parent.name in ("zoo", "data") and path.suffix in (
                    ".tflite", ".onnx", ".json", ".md", ".csv"):
                expected.add(f"{pkg}/{rel.as_posix()}")
    missing = sorted(expected - wheel_names)
    assert not missing, f"not in the wheel: {missing}"
    assert "edgecv/zoo/smile.int8.onnx" in wheel_names and "edgecv/runtime/track.py" in wheel_names
    # nothing installed as a top-level package that would shadow a user's own train.py or apps/
    tops = {n.split("/")[0] for n in wheel_names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"edgecv"}, tops
