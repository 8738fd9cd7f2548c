"""`--decode nvdec` on a machine without an NVIDIA GPU: the request falls back to the CPU decoder with
exactly one warning (however many sources), the frames are the CPU decoder's own (count and pixels)
on the real video, and the summary says where frames were decoded. PyNvVideoCodec is installed in
the dev environment (edgecv[gpu]), so the fallback taken is the real one: its import fails without
the driver's video libraries."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from conftest import assert_clean_error, run_cli
from edgecv.errors import ConfigError
from edgecv.runtime import nvdec
from edgecv.runtime.build import build_sources

pytestmark = pytest.mark.timeout(300)

PETS = "vtest_pets2009_480x360_h264.avi"


@pytest.fixture(scope="module")
def no_nvdec():
    why = nvdec.nvdec_unavailable()
    if why is None:
        pytest.skip("NVDEC runs on this machine: the fallback is not what happens here")
    return why


def test_the_reason_names_what_is_missing(no_nvdec):
    import importlib.util

    if importlib.util.find_spec("PyNvVideoCodec") is None:
        assert no_nvdec == "PyNvVideoCodec is not installed (install edgecv[gpu])"
    else:  # installed: its import needs the driver's libnvidia-encode / NVDEC libraries
        assert no_nvdec.startswith("PyNvVideoCodec cannot start: ") and no_nvdec.endswith("(no NVIDIA GPU or driver)")
        assert "\n" not in no_nvdec and "libnvidia" in no_nvdec


def test_nvdec_falls_back_with_one_warning_and_the_cpu_decoders_frames(no_nvdec, data_dir, caplog):
    path = str(data_dir / "videos" / PETS)
    with caplog.at_level(logging.WARNING):
        sources = build_sources([path, f"video:{PETS}"], decode="nvdec")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].getMessage() == f"NVDEC decode unavailable ({no_nvdec}); decoding on the CPU"
    src = sources[0]
    src.start()
    got = []
    while not src.done:
        frame = src.get(timeout=0.5)
        if frame is not None:
            got.append(frame.image)
    src.join(10)
    assert src.stats()["decoder"] == "cpu" and src.state.value == "ended"
    cap = cv2.VideoCapture(path)
    want = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        want.append(image)
    assert len(got) == len(want) == 795
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape == (360, 480, 3) and np.array_equal(a, b), i


def test_auto_and_cpu_decode_on_the_cpu_without_a_word(no_nvdec, caplog):
    with caplog.at_level(logging.WARNING):
        assert nvdec.resolve_decode("auto") == "cpu"
        assert nvdec.resolve_decode("cpu") == "cpu"
    assert not caplog.records
    with pytest.raises(ConfigError, match=r"unknown decode 'nvdc'.*Did you mean 'nvdec'"):
        nvdec.resolve_decode("nvdc")


def test_edgecv_run_decode_nvdec_warns_once_and_finishes(no_nvdec):
    proc = run_cli("smile", "--source", f"video:{PETS}", "--source", f"video:{PETS}", "--decode", "nvdec",
                   "--max-frames", "40", "--no-display", "--metrics-interval", "0")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    err = proc.stderr.decode()
    assert err.count("NVDEC decode unavailable") == 1, err
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 40
    assert {s["decoder"] for s in summary["sources"].values()} == {"cpu"}
    bad = run_cli("smile", "--source", f"video:{PETS}", "--decode", "gpu", "--no-display")
    assert_clean_error(bad, "--decode")
