"""Scale-out on a real Ray cluster (issue 17): `edgecv batch` over an archive and `edgecv smile --ray`
fleets, against one two-node Ray cluster on the loopback (a head on 127.0.0.1 and a second node on
127.0.0.2, each a `ray start --block` process stopped by its PID; never `ray stop`, which kills Ray
processes machine-wide by name). The commands run as subprocesses, as a user runs them.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import DATA, assert_clean_error, count_frames, run_cli

pytest.importorskip("ray")

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
VTEST = DATA / "videos" / "vtest_pets2009_480x360_h264.avi"
SMILE = DATA / "videos" / "smile.mp4"
SMILES = DATA / "smiles" / "SMILEs" / "positives" / "positives7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM a `ray start --block` by its PID (it drains its node in seconds), SIGKILL its own
    process group if it does not."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def cluster():
    """A head node (1 CPU) and a second node (1 CPU) on the loopback; yields (address, env)."""
    temp = Path(tempfile.mkdtemp(prefix="ecv-ray-", dir="/tmp"))  # socket paths must stay short
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_ADDRESS="")
    env.pop("RAY_ADDRESS")
    common = ["--block", "--num-cpus=1", "--memory=2000000000", "--object-store-memory=200000000",
              "--disable-usage-stats"]
    procs = []
    log = open(temp / "cluster.log", "wb")
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
             f"--temp-dir={temp / 'h'}", *common],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert procs[0].poll() is None, (temp / "cluster.log").read_text()
                assert time.monotonic() < deadline, "the Ray head did not start in 60 s"
                time.sleep(0.3)
        procs.append(subprocess.Popen(
            [RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.2", f"--temp-dir={temp / 'w'}",
             *common], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait = ("import ray, sys, time; ray.init(address=sys.argv[1], log_to_driver=False)\n"
                "t = time.monotonic()\n"
                "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.monotonic() - t < 60: time.sleep(0.3)\n"
                "sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) == 2 else 1)")
        subprocess.run([sys.executable, "-c", wait, address], env=env, timeout=120, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield address, env, [p.pid for p in procs]
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Short clips of the shared videos, SMILES faces and the smile still, plus a corrupt video and a
    corrupt image (the bad inputs)."""
    root = tmp_path_factory.mktemp("archive")
    (root / "clips").mkdir()
    for name, src, n in (("vtest120.avi", VTEST, 120), ("smile20.mp4", SMILE, 20), ("vtest40.avi", VTEST, 40)):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-frames:v", str(n), "-c", "copy",
                        str(root / "clips" / name)], check=True)
    (root / "faces").mkdir()
    for p in sorted(SMILES.iterdir())[:3]:
        shutil.copy(p, root / "faces" / p.name)
    shutil.copy(DATA / "videos" / "smile.jpg", root / "faces" / "smile.jpg")
    (root / "faces" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return root


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def expected(archive, tmp_path_factory):
    """`edgecv run --json-out` on each good file alone: the single-process truth."""
    out = tmp_path_factory.mktemp("run")
    truth = {}
    for p in sorted(archive.rglob("*")):
        if p.is_file() and "broken" not in p.name:
            j = out / (p.name + ".jsonl")
            proc = run_cli("run", "--model", "smile", "--detector", "yunet", "--source", str(p), "--no-display",
                           "--json-out", str(j), "--metrics-interval", "0", timeout=120)
            assert proc.returncode == 0, proc.stderr.decode()
            truth[str(p.resolve())] = _events(j)
    return truth


def _same(got: list[dict], want: list[dict], name: str) -> None:
    """Same frames, sizes, boxes and labels; scores equal to the 4th decimal."""
    assert [e["frame"] for e in got] == list(range(len(want))), f"{name}: frames {[e['frame'] for e in got][:10]}.."
    for g, w in zip(got, want):
        assert (g["width"], g["height"]) == (w["width"], w["height"])
        gb = [(d["box"], d["label"]) for d in g["detections"]]
        wb = [(d["box"], d["label"]) for d in w["detections"]]
        assert gb == wb, f"{name} frame {g['frame']}: {gb} != {wb}"
        for a, b in zip(g["detections"], w["detections"]):
            assert abs(a["score"] - b["score"]) < 1e-4, (name, g["frame"], a, b)


def _batch(out: Path, inputs, address: str, env: dict, *extra: str, wait: bool = True, progress: bool = False):
    args = [sys.executable, "-m", "edgecv", "batch", *map(str, inputs), "--model", "smile", "--detector", "yunet",
            "--out", str(out), "--address", address, *([] if progress else ["--no-progress"]), *extra]
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    return subprocess.run(args, env=env, capture_output=True, timeout=300)


def _manifest(out: Path) -> list[dict]:
    p = out / "manifest.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def _check_results(out: Path, expected: dict, keys) -> None:
    """One committed results file per input, rows exactly the single-process events, no temporaries."""
    done = [r for r in _manifest(out) if r.get("status") == "done"]
    by_input: dict[str, list[dict]] = {}
    for r in done:
        by_input.setdefault(r["input"], []).append(r)
    assert sorted(by_input) == sorted(keys)
    assert all(len(v) == 1 for v in by_input.values()), {k: len(v) for k, v in by_input.items() if len(v) > 1}
    for key, (rec,) in by_input.items():
        rows = _events(out / "results" / rec["results"])
        assert {e["source"] for e in rows} == {key}
        _same(rows, expected[key], Path(key).name)
        assert rec["frames"] == len(rows)
    files = sorted(p.name for p in (out / "results").iterdir())
    assert len(files) == len(by_input), files  # no temporaries, no strays


def _pids_titled(text: str, roots: list[int]) -> list[int]:
    """Processes below `roots` (this module's cluster) whose command line contains text (a Ray worker
    sets it to ray::NAME while it runs)."""
    parents, titles = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                titles[int(d.name)] = (d / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                pass

    def below(pid: int) -> bool:
        for _ in range(32):
            pid = parents.get(pid, 0)
            if pid in roots:
                return True
            if pid <= 1:
                return False
        return False

    return sorted(pid for pid, title in titles.items() if text in title and below(pid))


def _wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- edgecv batch --------------------------------------------------------------------------------------
def test_batch_matches_single_process_run_and_reports_bad_inputs(cluster, archive, expected, tmp_path):
    address, env, roots = cluster
    out = tmp_path / "out"
    proc = _batch(out, [archive / "clips", archive / "faces"], address, env, progress=True)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err  # two bad inputs: reported, the rest committed
    assert "2 of 9 inputs failed" in err and "Traceback" not in err
    assert f"batch: 9/9 inputs (2 failed), {sum(len(v) for v in expected.values()):,} frames" in err, err
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (7, 2, 0)
    assert summary["frames"] == sum(len(v) for v in expected.values())
    assert summary["ray"]["nodes"] == 2 and summary["ray"]["address"] == address
    failures = summary["failures"]
    assert "cannot be opened as a video" in failures[str((archive / "clips" / "broken.mp4").resolve())]
    assert "not an image or corrupt" in failures[str((archive / "faces" / "broken.jpg").resolve())]
    _check_results(out, expected, expected.keys())
    assert json.loads((out / "summary.json").read_text())["done"] == 7
    # Two tasks at a time, one CPU per node: both nodes worked.
    # (Ray reports the head by its interface address even when started on 127.0.0.1.)
    assert len({r["node"] for r in _manifest(out) if r.get("status") == "done"}) == 2

    # A rerun skips what is done and tries only the failed inputs again.
    again = _batch(out, [archive / "clips", archive / "faces"], address, env)
    s2 = json.loads(again.stdout)
    assert (s2["done"], s2["skipped"], s2["failed"]) == (0, 7, 2)
    _check_results(out, expected, expected.keys())

    # The same --out with another detector is refused in one line.
    other = run_cli("batch", str(archive / "clips"), "--model", "smile", "--detector", "haar", "--out", str(out),
                    "--address", address, env=env, timeout=60)
    assert_clean_error(other, r"holds results of another job \(detector differ")


def test_batch_loses_and_repeats_nothing_when_a_worker_the_classifier_and_the_driver_are_killed(
        cluster, archive, expected, tmp_path):
    address, env, roots = cluster
    src = archive / "clips" / "vtest120.avi"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(8):
        shutil.copy(src, inputs / f"cam{i}.avi")
    want = {str((inputs / f"cam{i}.avi").resolve()): expected[str(src.resolve())] for i in range(8)}
    out = tmp_path / "out"
    proc = _batch(out, [inputs], address, env, "--workers", "1", wait=False)
    try:
        # A worker in the middle of an input: Ray retries its task; nothing of it was written.
        victim = _wait_for(lambda: _pids_titled("ray::process_inputs", roots), 60, "a decode task")[0]
        os.kill(victim, signal.SIGKILL)
        # And the classifier actor: Ray restarts it and retries the calls it had.
        os.kill(_pids_titled("ray::Classifier", roots)[0], signal.SIGKILL)
        # Then the driver, once some inputs are committed and before all are.
        _wait_for(lambda: sum(r.get("status") == "done" for r in _manifest(out)) >= 2, 120, "two committed inputs")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    first = [r["input"] for r in _manifest(out) if r.get("status") == "done"]
    assert 2 <= len(first) < 8, "the driver was killed too late to test anything"
    again = _batch(out, [inputs], address, env)
    assert again.returncode == 0, again.stderr.decode()
    s = json.loads(again.stdout)
    assert s["skipped"] == len(first) and s["done"] == 8 - len(first) and s["failed"] == 0
    _check_results(out, want, want.keys())


def _one_line(proc, match: str) -> None:
    err = assert_clean_error(proc, match)
    assert len(err.strip().splitlines()) == 1, err


def test_batch_address_unreachable_is_one_line(cluster, archive, tmp_path):
    address, env, roots = cluster
    port = _free_port()  # nothing listens there
    proc = run_cli("batch", str(archive / "faces"), "--model", "smile", "--out", str(tmp_path / "o"),
                   "--address", f"127.0.0.1:{port}", timeout=30)
    _one_line(proc, rf"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused")
    assert not (tmp_path / "o").exists()
    # A port that accepts and never answers (a firewall, a stuck process): the probe's deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        where = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = run_cli("batch", str(archive / "faces"), "--model", "smile", "--out", str(tmp_path / "o"),
                       "--address", where, timeout=30)
    _one_line(proc, rf"cannot reach the Ray cluster at {where}: no answer within 3 s")
    # The real cluster with the wrong token.
    proc = run_cli("batch", str(archive / "faces"), "--model", "smile", "--out", str(tmp_path / "o"),
                   "--address", address, env={**env, "RAY_AUTH_TOKEN": "0" * 64}, timeout=30)
    _one_line(proc, rf"the Ray cluster at {address} refused this client's token")
    assert not (tmp_path / "o").exists()
    proc = run_cli("smile", "--ray", "--source", str(archive / "clips" / "vtest40.avi"), "--no-display",
                   timeout=30, env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    _one_line(proc, rf"cannot reach the Ray cluster at 127.0.0.1:{port}")
    proc = run_cli("run", "--model", "smile", "--source", str(archive / "clips" / "vtest40.avi"), "--no-display",
                   "--address", address, timeout=30)
    _one_line(proc, r"--address names a Ray cluster for --ray; add --ray")


@pytest.mark.parametrize("command", [["batch", "x.mp4", "--model", "smile", "--out", "o"],
                                     ["smile", "--ray", "--source", "x.mp4", "--no-display"]])
def test_without_the_cluster_extra_the_message_names_it(command, tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from edgecv.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, timeout=60, cwd=tmp_path)
    err = assert_clean_error(proc, r"pip install 'edgecv\[cluster\]'")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_the_edge_modules_do_not_import_ray():
    code = ("import sys, edgecv.cli, edgecv.runtime.fleet, edgecv.runtime.archive, edgecv.apps.batch, "
            "edgecv.raycluster\nedgecv.cli.build_parser()\n"
            "bad = [m for m in ('ray', 'pyarrow', 'tensorflow') if m in sys.modules]\n"
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()


# --- edgecv smile --ray ----------------------------------------------------------------------------------
def _fleet(sources, address: str, env: dict, tmp_path: Path, *extra: str, wait: bool = True):
    args = [sys.executable, "-m", "edgecv", "smile", "--ray", "--address", address, "--ray-actors", "2",
            "--policy", "every", "--no-display", "--metrics-interval", "0", "--json-out", str(tmp_path / "e.jsonl"),
            "--summary-out", str(tmp_path / "summary.json"), *extra]
    for s in sources:
        args += ["--source", str(s)]
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(args, env=env, capture_output=True, timeout=300)


def _fleet_sources(archive: Path) -> list[Path]:
    c = archive / "clips"
    return [c / "vtest40.avi", c / "smile20.mp4", c / "vtest120.avi", c / "vtest40.avi"]


def _check_fleet(tmp_path: Path, sources: list[Path]) -> dict:
    summary = json.loads((tmp_path / "summary.json").read_text())
    events = _events(tmp_path / "e.jsonl")
    for i, src in enumerate(sources):
        n = count_frames(src)
        frames = sorted(e["frame"] for e in events if e["source"] == f"s{i}")
        assert frames == list(range(n)), f"s{i}: {len(frames)} events for {n} decoded frames"
        assert summary["sources"][f"s{i}"]["frames"] == n
    assert summary["frames"] == len(events)
    return summary


def test_fleet_of_four_files_over_two_actors_delivers_every_frame(cluster, archive, tmp_path):
    address, env, roots = cluster
    sources = _fleet_sources(archive)
    proc = _fleet(sources, address, env, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    summary = _check_fleet(tmp_path, sources)
    assert summary["ray"]["actors"] == 2 and summary["restarts"] == 0
    assert {summary["sources"][f"s{i}"]["actor"] for i in range(4)} == {"a0", "a1"}


def test_fleet_actor_killed_is_restarted_and_reported(cluster, archive, tmp_path):
    address, env, roots = cluster
    sources = _fleet_sources(archive)
    # Paced (files wait, nothing is dropped), so the kill lands mid-run.
    proc = _fleet(sources, address, env, tmp_path, "--max-fps", "20", wait=False)
    try:
        pids = _wait_for(lambda: (lambda p: p if len(p) == 2 else None)(_pids_titled("ray::FleetWorker", roots)),
                         60, "two pipeline actors")
        # Events reach the --json-out temporary once every actor's pipeline has started.
        _wait_for(lambda: any(p.stat().st_size for p in tmp_path.glob(".e.jsonl*part*")), 60, "the first events")
        os.kill(pids[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, err.decode()
    summary = _check_fleet(tmp_path, sources)  # a restarted file starts over; no frame lost or repeated
    assert summary["restarts"] == 1, summary["actors"]
    restarted = [a for a in summary["actors"].values() if a["restarts"]]
    assert len(restarted) == 1 and len(restarted[0]["gaps_s"]) == 1
    assert "died" in err.decode() and "restarted" in err.decode()


def test_fleet_refuses_outputs_that_need_the_frames_here(archive, tmp_path):
    proc = run_cli("smile", "--ray", "--source", str(archive / "clips" / "vtest40.avi"), "--no-display",
                   "--save", str(tmp_path / "o.mp4"), timeout=60)
    _one_line(proc, r"--save needs every frame in this process; with --ray frames stay in the actors")
    assert not (tmp_path / "o.mp4").exists()


def test_batch_sigterm_stops_with_finished_inputs_committed(cluster, archive, expected, tmp_path):
    address, env, roots = cluster
    src = archive / "clips" / "vtest120.avi"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(6):
        shutil.copy(src, inputs / f"cam{i}.avi")
    want = {str((inputs / f"cam{i}.avi").resolve()): expected[str(src.resolve())] for i in range(6)}
    out = tmp_path / "out"
    proc = _batch(out, [inputs], address, env, "--workers", "1", wait=False)
    try:
        _wait_for(lambda: any(r.get("status") == "done" for r in _manifest(out)), 120, "a committed input")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 143, stderr.decode()
    assert "terminated" in stderr.decode() and "Traceback" not in stderr.decode()
    summary = json.loads(stdout)
    assert summary["interrupted"] and 1 <= summary["done"] < 6
    again = _batch(out, [inputs], address, env)
    assert again.returncode == 0, again.stderr.decode()
    assert json.loads(again.stdout)["skipped"] == summary["done"]
    _check_results(out, want, want.keys())
