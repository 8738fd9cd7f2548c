"""Bad input through the CLI, as a user meets it: odd and hostile images in a folder (the rest of the
batch is still processed), unreadable files, broken videos, garbage and mismatched models, broken
specs, models that would run code, and CLI misuse. Every error is one line, a non-zero exit and
no traceback (assert_clean_error).

Decisions recorded here:
- An image that cannot be used (empty, not an image, corrupt, truncated, over the pixel limit,
  unreadable) is skipped with a warning naming it; `eval` counts it in `skipped`, `run` goes on.
- A truncated video: whatever decodes is processed, a warning says how many frames of the header's
  count decoded, exit 0 (AVI cut in half). When nothing can be opened (an MP4 cut before its index,
  random bytes), it is a one-line error and exit 2.
- One unusable source among several ends the run at start (exit 2, naming it): a typo in a list of
  cameras should not go unnoticed behind the other streams.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import assert_clean_error, run_cli
from models import smile_model_files, smile_spec  # noqa: F401  (fixture)

LIMIT = 250_000  # EDGECV_MAX_IMAGE_PIXELS for these runs: 600x600 images are "huge", 64x64 ones are not
FAST = ["--detector", "none", "--no-display", "--metrics-interval", "0"]


def smile_crops(data_dir, n: int) -> tuple[list[Path], list[Path]]:
    root = data_dir / "smiles" / "SMILEs"
    pos = sorted((root / "positives" / "positives7").glob("*.jpg"))[:n]
    neg = sorted((root / "negatives" / "negatives7").glob("*.jpg"))[:n]
    return pos, neg


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h and holds no pixels: a decompression bomb's calling card."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok, ext
    return buf.tobytes()


def odd_images(data_dir) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(usable, unusable) image files by name, made from real pictures."""
    face = cv2.imread(str(smile_crops(data_dir, 1)[0][0]), cv2.IMREAD_COLOR)  # 64x64 real face crop
    photo = cv2.imread(str(data_dir / "videos" / "smile.jpg"), cv2.IMREAD_COLOR)
    big = cv2.resize(photo, (600, 600))  # 360,000 px > LIMIT: a real image, fully decodable, too big
    real_jpg = (data_dir / "videos" / "smile.jpg").read_bytes()
    good = {
        "gray.png": encode(".png", cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)),
        "colour.png": encode(".png", face),
        "alpha.png": encode(".png", cv2.cvtColor(face, cv2.COLOR_BGR2BGRA)),
        "deep16.png": encode(".png", face.astype(np.uint16) * 257),
        "one-pixel.png": encode(".png", face[:1, :1]),
        "one-pixel.jpg": encode(".jpg", face[:1, :1]),
        "one-row.png": encode(".png", face[:1]),
        "gray.webp": encode(".webp", face),
        "gray.bmp": encode(".bmp", cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)),
    }
    bad = {
        "zero-bytes.jpg": b"",
        "notes.png": b"these are my notes, not a picture\n",
        "random.jpg": np.random.default_rng(1).bytes(5000),
        "truncated.jpg": real_jpg[: len(real_jpg) // 2],
        "corrupt-header.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        "bomb-header.png": png_header_only(100_000, 100_000),
        "huge.jpg": encode(".jpg", big),
        "huge.png": encode(".png", big),
        "huge.webp": encode(".webp", big),
        "huge.tiff": encode(".tiff", big),
        # content OpenCV sniffs (Sun raster) behind an image name: no header edgecv parses, so
        # OpenCV's own limit, which `edgecv` sets to the same value at start, must stop it
        "sunraster-named.png": encode(".ras", big),
    }
    return good, bad


@pytest.fixture(scope="module")
def mixed_folder(data_dir, tmp_path_factory):
    """An image-folder data set (class = folder) with real crops plus every odd image in `smiling/`."""
    root = tmp_path_factory.mktemp("mixed")
    pos, neg = smile_crops(data_dir, 3)
    for cls, files in (("smiling", pos), ("not_smiling", neg)):
        (root / cls).mkdir()
        for f in files:
            shutil.copy(f, root / cls / f.name)
    good, bad = odd_images(data_dir)
    for name, data in {**good, **bad}.items():
        (root / "smiling" / name).write_bytes(data)
    (root / "smiling" / "folder.jpg").mkdir()  # a directory with an image's name: not a file, not listed
    return {"root": root, "good": len(pos) + len(neg) + len(good), "bad": sorted(bad)}


def test_eval_skips_and_counts_every_bad_image_and_scores_the_rest(smile_model_files, mixed_folder):
    proc = run_cli("eval", str(smile_model_files["onnx"]), "--data", str(mixed_folder["root"]), "--split", "all",
                   "--json", env={"EDGECV_MAX_IMAGE_PIXELS": str(LIMIT)}, timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    report = json.loads(proc.stdout)
    assert report["n"] == mixed_folder["good"]
    assert report["skipped"] == len(mixed_folder["bad"])
    for name in mixed_folder["bad"]:
        assert f"skipping {mixed_folder['root'] / 'smiling' / name}:" in err, name
    for name in ("bomb-header.png", "huge.jpg", "huge.png", "huge.webp", "huge.tiff", "sunraster-named.png"):
        line = next(ln for ln in err.splitlines() if name in ln)
        assert f"exceeds the {LIMIT:,}-pixel limit" in line, line


def test_run_on_the_same_folder_processes_every_good_image(smile_model_files, mixed_folder, tmp_path):
    events = tmp_path / "e.jsonl"
    proc = run_cli("run", "--model", str(smile_model_files["tflite"]), "--source", str(mixed_folder["root"]),
                   *FAST, "--json-out", str(events), env={"EDGECV_MAX_IMAGE_PIXELS": str(LIMIT)}, timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == mixed_folder["good"] == json.loads(proc.stdout)["frames"]
    assert {(e["width"], e["height"]) for e in lines} >= {(1, 1), (64, 1), (64, 64)}
    for name in mixed_folder["bad"]:
        assert f"skipping {mixed_folder['root'] / 'smiling' / name}:" in err, name


def test_a_single_bad_image_source_is_a_clean_error(smile_model_files, tmp_path):
    """A named image file that is a directory, and one that is not an image."""
    (tmp_path / "photo.jpg").mkdir()
    (tmp_path / "notes.jpg").write_text("hello")
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", str(tmp_path / "photo.jpg"), *FAST)
    assert_clean_error(proc, r"photo\.jpg: folder holds no images")
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", str(tmp_path / "notes.jpg"), *FAST)
    # The only source yielded nothing: the run could not do its job, so it says why and exits 1.
    err = assert_clean_error(proc, r"no source produced a frame: s0 .*notes\.jpg.*not an image or corrupt")
    assert proc.returncode == 1 and json.loads(proc.stdout)["frames"] == 0


# --- unreadable files: a real EACCES, as an unprivileged user ------------------------------------------
def unprivileged() -> list[str]:
    """The command prefix that runs as `nobody` when the tests run as root (root reads mode-000 files)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a mode-000 file is readable to root, so no "
                    "permission error can happen")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def public_dir():
    """A folder `nobody` can enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="edgecv-perm-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_unprivileged(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(cwd), EDGECV_CACHE=str(cwd / "cache"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([*unprivileged(), sys.executable, "-m", "edgecv", *args], capture_output=True, env=env,
                          cwd=cwd, timeout=300)


def test_unreadable_files_are_skipped_or_refused_by_name(smile_model_files, data_dir, public_dir):
    prefix = unprivileged()
    model = public_dir / "smile.onnx"
    for src in (smile_model_files["onnx"], Path(str(smile_model_files["onnx"]) + ".spec.json")):
        shutil.copy(src, public_dir / src.name)
    (public_dir / "cache").mkdir(mode=0o777)
    (public_dir / "cache").chmod(0o777)
    data = public_dir / "faces"
    pos, neg = smile_crops(data_dir, 2)
    for cls, files in (("smiling", pos), ("not_smiling", neg)):
        (data / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, data / cls / f.name)
    locked = data / "smiling" / "locked.jpg"
    shutil.copy(pos[0], locked)
    for p in [public_dir, *public_dir.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    locked.chmod(0)
    if not prefix:
        assert not os.access(locked, os.R_OK)

    proc = run_unprivileged("eval", str(model), "--data", str(data), "--split", "all", "--json", cwd=public_dir)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert f"skipping {locked}: permission denied" in err
    assert json.loads(proc.stdout)["n"] == 4 and json.loads(proc.stdout)["skipped"] == 1

    proc = run_unprivileged("run", "--model", str(model), "--source", str(data), *FAST, cwd=public_dir)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert f"skipping {locked}: permission denied" in err and json.loads(proc.stdout)["frames"] == 4

    proc = run_unprivileged("run", "--model", str(model), "--source", str(locked), *FAST, cwd=public_dir)
    assert_clean_error(proc, rf"{locked}: permission denied")

    (public_dir / "smile.onnx").chmod(0)
    proc = run_unprivileged("run", "--model", str(model), "--source", "synthetic://32x32?frames=2", *FAST,
                            cwd=public_dir)
    assert_clean_error(proc, r"smile\.onnx: .*([Pp]ermission denied|not a loadable ONNX model)")


# --- videos ------------------------------------------------------------------------------------------------
def test_avi_cut_in_half_processes_what_decodes_and_warns(smile_model_files, data_dir, tmp_path):
    video = data_dir / "videos" / "vtest_pets2009_480x360_h264.avi"
    cut = tmp_path / "half.avi"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    events = tmp_path / "e.jsonl"
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", str(cut), *FAST,
                   "--json-out", str(events), timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    n = len(events.read_text().splitlines())
    assert 0 < n < 795
    assert f"claims 795 frames but only {n} decoded; processed what decoded" in err
    assert json.loads(proc.stdout)["frames"] == n


@pytest.mark.parametrize("make, match", [
    (lambda v: v.read_bytes()[: v.stat().st_size // 2], r"cannot be opened as a video"),  # index (moov) lost
    (lambda v: b"", r"cannot be opened as a video|opens but no frame decodes"),
    (lambda v: b"RIFF\x00\x00\x00\x00AVI LIST" + os.urandom(4000), r"cannot be opened as a video|opens but no frame"),
])
def test_video_that_cannot_open_is_one_line(smile_model_files, data_dir, tmp_path, make, match):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(make(data_dir / "videos" / "smile.mp4"))
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", str(bad), *FAST, timeout=120)
    assert_clean_error(proc, rf"broken\.mp4: ({match})")


def test_one_bad_source_among_good_ones_names_it(smile_model_files, data_dir, tmp_path):
    (tmp_path / "random.mp4").write_bytes(os.urandom(100_000))
    proc = run_cli("run", "--model", str(smile_model_files["onnx"]), "--source", "synthetic://64x64?frames=5",
                   "--source", str(tmp_path / "random.mp4"), "--source", str(data_dir / "videos" / "smile.mp4"),
                   *FAST, timeout=120)
    assert_clean_error(proc, r"random\.mp4: (cannot be opened as a video|opens but no frame decodes)")
    assert proc.returncode == 2


# --- models and their specs ---------------------------------------------------------------------------------
SYN = ["--source", "synthetic://64x64?frames=3"]


def with_sidecar(path: Path, spec_text: str | bytes | None) -> Path:
    side = Path(str(path) + ".spec.json")
    if isinstance(spec_text, bytes):
        side.write_bytes(spec_text)
    elif spec_text is not None:
        side.write_text(spec_text)
    return path


@pytest.mark.parametrize("suffix, match", [
    (".tflite", r"garbage\.tflite: LiteRT cannot load this model"),
    (".onnx", r"garbage\.onnx: not a loadable ONNX model"),
    (".keras", r"garbage\.keras: (Keras cannot load this model|not a loadable Keras model)"),
])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_garbage_model_files(smile_model_files, mixed_folder, tmp_path, suffix, match, command):
    model = with_sidecar(tmp_path / f"garbage{suffix}", smile_spec().to_json())
    model.write_bytes(np.random.default_rng(7).bytes(6000))
    if command == "run":
        proc = run_cli("run", "--model", str(model), *SYN, *FAST, timeout=120)
    else:
        proc = run_cli("eval", str(model), "--data", str(mixed_folder["root"]), timeout=120)
    assert_clean_error(proc, match)


def test_garbage_model_without_a_spec_says_which_is_missing(tmp_path):
    model = tmp_path / "garbage.tflite"
    model.write_bytes(os.urandom(3000))
    proc = run_cli("run", "--model", str(model), *SYN, *FAST)
    assert_clean_error(proc, r"garbage\.tflite: no ModelSpec embedded and no garbage\.tflite\.spec\.json beside it")


@pytest.mark.parametrize("kind", ["onnx", "tflite"])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_model_whose_input_shape_does_not_match_its_spec(smile_model_files, mixed_folder, tmp_path, kind, command):
    from edgecv.preprocess import default_chain

    model = tmp_path / f"wrong.{kind}"
    shutil.copy(smile_model_files[kind], model)
    wrong = smile_spec().replace(input_shape=(32, 32, 1), preprocess=tuple(default_chain((32, 32, 1))))
    with_sidecar(model, wrong.to_json())
    if command == "run":
        proc = run_cli("run", "--model", str(model), *SYN, *FAST, timeout=120)
    else:
        proc = run_cli("eval", str(model), "--data", str(mixed_folder["root"]), timeout=120)
    assert_clean_error(proc, r"wrong\.\w+: model input shape \[None, 28, 28, 1\] does not match the ModelSpec "
                             r"input_shape \[32, 32, 1\]")


def _spec_with(**changes) -> str:
    d = json.loads(smile_spec().to_json())
    d.update(changes)
    return json.dumps(d)


@pytest.mark.parametrize("spec_text, match", [
    (None, r"m\.onnx: no ModelSpec embedded and no m\.onnx\.spec\.json beside it"),
    ('{"name": "x", "task":', r"m\.onnx\.spec\.json: ModelSpec is not valid JSON"),
    ("", r"m\.onnx\.spec\.json: ModelSpec is not valid JSON"),
    ("[1, 2, 3]", r"m\.onnx\.spec\.json: a ModelSpec must be a JSON object; got list"),
    ('{"name": "x"}', r"m\.onnx\.spec\.json: ModelSpec is missing field\(s\): task, input_shape, colour, preprocess"),
    (_spec_with(task="detect"), r"ModelSpec\.task must be one of classify, smile, .*; got 'detect'"),
    (_spec_with(input_shape="28x28"), r"m\.onnx\.spec\.json: malformed ModelSpec"),
    (_spec_with(input_shape=[28, 28, 1, 1]), r"input_shape must be three positive ints"),
    (_spec_with(colour="bgr"), r"ModelSpec colour 'bgr' does not fit 1 input channel"),
    (_spec_with(preprocess=[{"size": 3}]), r"every preprocess step needs an 'op'"),
    (_spec_with(version=99), r"ModelSpec version 99 is newer than this edgecv understands"),
    (b"\xff\xfe{\x00", r"cannot read ModelSpec .*m\.onnx\.spec\.json"),
])
def test_missing_or_malformed_spec(smile_model_files, tmp_path, spec_text, match):
    model = with_sidecar(tmp_path / "m.onnx", spec_text)
    shutil.copy(smile_model_files["onnx"], model)
    proc = run_cli("run", "--model", str(model), *SYN, *FAST, timeout=120)
    assert_clean_error(proc, match)


def test_malformed_spec_embedded_in_a_tflite_file(smile_model_files, tmp_path):
    """A spec zip appended to the flatbuffer (the TFLite metadata layout) that holds broken JSON, and
    one whose deflated member is damaged."""
    flat = smile_model_files["tflite"].read_bytes()
    buf = tmp_path / "z.zip"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("edgecv.spec.json", '{"name": "x", "task": "smile", "input_shape": [28, 28')
    model = tmp_path / "embedded.tflite"
    model.write_bytes(flat + buf.read_bytes())
    proc = run_cli("run", "--model", str(model), *SYN, *FAST, timeout=120)
    assert_clean_error(proc, r"embedded\.tflite: embedded ModelSpec is not valid JSON")

    from models import embed_tflite
    good = bytearray(embed_tflite(flat, smile_spec()))
    good[len(flat) + 60] ^= 0xFF  # inside the deflated spec
    model.write_bytes(bytes(good))
    proc = run_cli("run", "--model", str(model), *SYN, *FAST, timeout=120)
    assert_clean_error(proc, r"embedded\.tflite: embedded ModelSpec (is unreadable|is not valid JSON)")


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    """A .keras with a Lambda layer, and .keras files whose config names Python callables outside Keras
    (os.system, subprocess.Popen) that would write a marker file if anything ran them."""
    import keras

    root = tmp_path_factory.mktemp("keras")
    marker = root / "pwned"
    shape = (28, 28, 1)
    lam = keras.Sequential([keras.Input(shape), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Flatten(),
                            keras.layers.Dense(2, activation="softmax")])
    lam.save(root / "lambda.keras")
    smile_spec().save(root / "lambda.keras.spec.json")
    plain = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    plain.save(root / "plain.keras")
    with zipfile.ZipFile(root / "plain.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    evil = {
        "model-is-os-system": {"module": "os", "class_name": "system", "config": f"touch {marker}",
                               "registered_name": None},
        "layer-is-popen": {"module": "subprocess", "class_name": "Popen",
                           "config": {"args": ["touch", str(marker)]}, "registered_name": None},
        "activation-is-eval": {"module": "builtins", "class_name": "function", "config": "eval",
                               "registered_name": None},
    }
    paths = {}
    for name, payload in evil.items():
        cfg = json.loads(files["config.json"])
        if name == "model-is-os-system":
            cfg = payload
        elif name == "layer-is-popen":
            cfg["config"]["layers"][1] = payload
        else:
            cfg["config"]["layers"][-1]["config"]["activation"] = payload
        path = root / f"{name}.keras"
        with zipfile.ZipFile(path, "w") as z:
            for n, b in files.items():
                z.writestr(n, json.dumps(cfg) if n == "config.json" else b)
        smile_spec().save(str(path) + ".spec.json")
        paths[name] = path
    return {"lambda": root / "lambda.keras", "evil": paths, "marker": marker}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "eval"])
def test_keras_lambda_layer_is_refused(keras_models, mixed_folder, command):
    model = keras_models["lambda"]
    if command == "run":
        proc = run_cli("run", "--model", str(model), *SYN, *FAST, timeout=300)
    else:
        proc = run_cli("eval", str(model), "--data", str(mixed_folder["root"]), timeout=300)
    assert_clean_error(proc, r"lambda\.keras: .*Lambda")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model-is-os-system", "layer-is-popen", "activation-is-eval"])
def test_keras_config_naming_python_callables_runs_nothing(keras_models, name):
    # In-process, through the one loader (edgecv.kerasload) and the Keras backend built on it: the
    # CLI path for .keras files is the Lambda test above, and each TensorFlow start costs ~8 s.
    from edgecv.errors import ModelError
    from edgecv.kerasload import load_keras_model
    from edgecv.runtime.backends import KerasBackend

    path = keras_models["evil"][name]
    with pytest.raises(ModelError, match=rf"{name}\.keras: (Keras cannot load this model|Lambda layer)"):
        load_keras_model(path)
    with pytest.raises(ModelError, match=rf"{name}\.keras: (Keras cannot load this model|Lambda layer)"):
        KerasBackend(path, smile_spec())
    assert not keras_models["marker"].exists(), f"{name} ran code"


# --- CLI misuse -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, match", [
    (["run", "--model", "{m}", *SYN, "--batch", "abc"], r"argument --batch: invalid int value: 'abc'"),
    (["run", "--model", "{m}", *SYN, "--max-delay-ms", "soon"], r"argument --max-delay-ms: expected a number; got 'soon'"),
    (["run", "--model", "{m}", *SYN, "--threads", "-2"], r"--threads must be a positive integer; got -2"),
    (["run", "--model", "{m}", *SYN, "--policy", "newest"], r"argument --policy: invalid choice: 'newest'"),
    (["run", "--model", "{m}", *SYN, "--frobnicate"], r"unrecognized arguments: --frobnicate"),
    (["run", *SYN], r"the following arguments are required: --model"),
    (["run", "--model", "{m}", "--sources-file", "{tmp}/nope.txt"], r"--sources-file .*nope\.txt: no such file"),
    (["run", "--model", "{m}", "--sources-file", "{tmp}"], r"--sources-file .*: is a folder"),
    (["run", "--model", "{tmp}/nope.onnx", *SYN], r"nope\.onnx: no such model file"),
    (["run", "--model", "{tmp}/model.pb", *SYN], r"model\.pb: unsupported model file \(use \.tflite, \.onnx, \.keras\)"),
    (["run", "--model", "{m}", *SYN, "--json-out", "{tmp}/afile/e.jsonl"], r"cannot write .*afile/e\.jsonl"),
    (["run", "--model", "{m}", *SYN, "--save", "{tmp}/afile/out.avi"], r"cannot write .*afile/out\.avi"),
    (["eval", "{m}", "--data", "{tmp}/nowhere"], r"nowhere: no such file or folder"),
    (["eval", "{m}", "--data", "{tmp}/afile"], r"afile: unsupported data file"),
    (["eval", "{m}", "--data", "{tmp}", "--split", "most"], r"argument --split: invalid choice: 'most'"),
    (["eval", "{m}", "--bogus"], r"unrecognized arguments: --bogus"),
    (["eval"], r"the following arguments are required: MODEL"),
    (["eval", "{tmp}/missing.tflite", "--data", "{tmp}"], r"missing\.tflite: no such model file"),
    (["eval", "{tmp}/afile", "--data", "{tmp}"], r"unsupported model file \(use \.tflite, \.onnx, \.keras\)"),
])
def test_cli_misuse_is_one_line(smile_model_files, tmp_path, argv, match):
    (tmp_path / "afile").write_text("just a file")
    (tmp_path / "model.pb").write_bytes(b"\x00")
    args = [a.replace("{m}", str(smile_model_files["onnx"])).replace("{tmp}", str(tmp_path)) for a in argv]
    if args[0] == "run":
        args += ["--no-display"]
    assert_clean_error(run_cli(*args, timeout=120), match)
