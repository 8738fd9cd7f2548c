"""Pipeline defaults come from the CPUs this process may use (affinity, cgroup quota); a flag wins."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from edgecv.runtime.machine import _cgroup_quota, choose_defaults, usable_cpus

SMILE = ["smile", "--source", "video:vtest_pets2009_480x360_h264.avi", "--max-frames", "20", "--no-display",
         "--metrics-interval", "0"]


def summary_of(args, cpus=None) -> dict:
    cmd = [sys.executable, "-m", "edgecv", *args]
    if cpus is not None:
        cmd = [shutil.which("taskset"), "-c", cpus, *cmd]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


@pytest.mark.skipif(not shutil.which("taskset"), reason="needs taskset (util-linux)")
def test_defaults_follow_the_affinity_mask():
    one = summary_of(SMILE, cpus="0")["defaults"]
    assert one == {"cpus": 1, "detect_workers": 1, "threads": 1, "chosen": ["detect_workers", "threads"],
                   "why": one["why"]} and "1 usable CPU(s)" in one["why"]
    everything = summary_of(SMILE)["defaults"]
    n = len(os.sched_getaffinity(0))
    assert everything["cpus"] == usable_cpus() and everything["detect_workers"] == min(usable_cpus(), 8)
    assert usable_cpus() <= n


def test_an_explicit_flag_wins_and_whole_frames_give_inference_the_cpus():
    d = summary_of([*SMILE, "--detect-workers", "3"])["defaults"]
    assert d["detect_workers"] == 3 and d["chosen"] == ["threads"]
    whole = summary_of(["run", "--model", "smile", "--detector", "none", *SMILE[1:]])["defaults"]
    assert whole["detect_workers"] == 1 and whole["threads"] == min(usable_cpus(), 8)


def test_a_cgroup_quota_caps_the_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    assert _cgroup_quota(tmp_path / "missing") is None
    assert choose_defaults(16, 4, detector=True).detect_workers == 8
