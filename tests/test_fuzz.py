"""Fuzzing with hypothesis, bounded (max_examples, a generous per-example deadline that only catches
hangs): the image decode path, the ModelSpec / embedded-metadata parsers and the captcha segmenter,
on random bytes and on real files with bytes flipped, cut, inserted and spliced.

Each target may only answer with its documented result or its documented error: decode_image ->
an HxWx3 (or HxW) uint8 array within the pixel limit, or DataError; ModelSpec.from_json ->
ModelSpec or ModelSpecError; read_tflite_spec -> ModelSpec, None or ModelSpecError; segment ->
a consistent Segmentation, or DataError. Anything else (IndexError, struct.error, cv2.error,
zlib.error, a MemoryError from a lying header) is a bug.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecv.apps.captcha_segment import Segmentation, segment
from edgecv.errors import DataError, ModelSpecError
from edgecv.images import MAX_PIXELS, decode_image, header_size
from edgecv.modelfile import read_tflite_spec
from edgecv.spec import ModelSpec
from models import embed_tflite, smile_model_files, smile_spec  # noqa: F401  (fixture)

DATA = Path(os.environ["EDGECV_DATA"])
# EDGECV_FUZZ_EXAMPLES=2000 for a deeper local run; CI keeps the suite short.
FUZZ = settings(max_examples=int(os.environ.get("EDGECV_FUZZ_EXAMPLES", 150)), deadline=timedelta(seconds=10),
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _real_images() -> dict[str, bytes]:
    """Real files of each container we decode: JPEG (a face crop, a photo, a toll captcha), PNG
    (a text captcha, a digit crop), and the same photo re-encoded as WebP, TIFF, BMP, GIF-less PGM."""
    smile = sorted((DATA / "smiles" / "SMILEs" / "positives" / "positives7").glob("*.jpg"))[0]
    files = {
        "jpeg-face": smile.read_bytes(),
        "jpeg-photo": (DATA / "videos" / "smile.jpg").read_bytes(),
        "jpeg-captcha": (DATA / "ezpass" / "raw" / "00007.jpg").read_bytes(),
        "png-captcha": sorted((DATA / "captcha_images_v2").glob("*.png"))[0].read_bytes(),
        "png-digit": sorted((DATA / "ezpass" / "digits" / "3").glob("*.png"))[0].read_bytes(),
    }
    small = cv2.resize(cv2.imdecode(np.frombuffer(files["jpeg-photo"], np.uint8), cv2.IMREAD_COLOR), (96, 64))
    bgra = cv2.cvtColor(small, cv2.COLOR_BGR2BGRA)
    for name, ext, img in (("webp", ".webp", small), ("webp-alpha", ".webp", bgra), ("tiff", ".tiff", small),
                           ("bmp", ".bmp", small), ("pgm", ".pgm", cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)),
                           ("png-alpha", ".png", bgra), ("png-16bit", ".png", small.astype(np.uint16) * 257)):
        ok, buf = cv2.imencode(ext, img)
        assert ok, ext
        files[name] = buf.tobytes()
    return files


REAL = _real_images()


@st.composite
def mutated(draw, seeds: dict[str, bytes]) -> bytes:
    """A real file with a few random edits: byte flips, a cut, an insertion, a splice of another file."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "flip", "set", "cut", "insert", "splice", "header"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xD8, 0xD9, 0xC0]))
        elif op == "cut":
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "splice":
            other = seeds[draw(st.sampled_from(sorted(seeds)))]
            j = draw(st.integers(0, len(other)))
            data = data[:i] + bytearray(other[j:])
        else:  # the first 64 bytes hold the sizes: hit them harder
            k = draw(st.integers(0, min(63, len(data) - 1)))
            data[k] = draw(st.integers(0, 255))
    return bytes(data)


def check_decoded(data: bytes, gray: bool) -> None:
    try:
        img = decode_image(data, "fuzz", gray=gray)
    except DataError as e:
        assert str(e).startswith("fuzz: ") and "\n" not in str(e)
        return
    assert img.dtype == np.uint8
    if gray:
        assert img.ndim == 2
    else:
        assert img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] >= 1 and img.shape[1] >= 1
    # The size check happens on the header before decoding; the decoder must agree with it.
    assert img.shape[0] * img.shape[1] <= MAX_PIXELS


@FUZZ
@given(data=mutated(REAL), gray=st.booleans())
def test_decode_image_on_mutated_real_images(data, gray):
    check_decoded(data, gray)


@FUZZ
@given(data=st.one_of(st.binary(max_size=4096),
                      # random bytes behind each real magic number, so every header parser is reached
                      st.tuples(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM",
                                                 b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x10\x00\x00\x00WEBPVP8X",
                                                 b"RIFF\x00\x00\x00\x00WEBPVP8L", b"II*\x00", b"MM\x00*",
                                                 b"II+\x00", b"P5\n", b"P6 ", b"P1\n"]),
                                st.binary(max_size=2048)).map(lambda t: t[0] + t[1])),
       gray=st.booleans())
def test_decode_image_on_random_bytes(data, gray):
    check_decoded(data, gray)


@FUZZ
@given(data=mutated(REAL))
def test_header_size_never_raises(data):
    size = header_size(data)
    assert size is None or (len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size))


# --- ModelSpec and the metadata it travels in ----------------------------------------------------------
SPEC_JSON = smile_spec().to_json()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
SPEC_FIELDS = ["name", "task", "input_shape", "colour", "preprocess", "labels", "charset", "arch", "source_hash",
               "quantization", "data", "metrics", "extra", "version", "unknown_field"]


def check_spec(make) -> None:
    try:
        spec = make()
    except ModelSpecError as e:
        assert "\n" not in str(e).strip()
        return
    assert isinstance(spec, ModelSpec)
    assert len(spec.input_shape) == 3 and all(isinstance(d, int) and d > 0 for d in spec.input_shape)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300), mutated({"spec": SPEC_JSON.encode()})))
def test_modelspec_from_json_on_random_and_mutated_text(text):
    check_spec(lambda: ModelSpec.from_json(text))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(SPEC_FIELDS), json_values, min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(SPEC_FIELDS), max_size=2))
def test_modelspec_with_fields_of_any_json_type(changes, drop):
    d = json.loads(SPEC_JSON)
    d.update(changes)
    for k in drop:
        d.pop(k, None)
    check_spec(lambda: ModelSpec.from_json(json.dumps(d)))


@pytest.fixture(scope="module")
def tflite_head(smile_model_files) -> list[bytes]:
    # In a list: hypothesis prints a failing example's arguments, and 40 kB of flatbuffer helps no one.
    return [smile_model_files["tflite"].read_bytes()[:4096]]


@FUZZ
@given(data=st.data())
def test_read_tflite_spec_on_random_and_mutated_files(tflite_head, data):
    model = tflite_head[0]  # the real flatbuffer's start; its content does not matter to the spec reader
    good = embed_tflite(model, smile_spec())
    blob = data.draw(st.one_of(
        st.binary(max_size=2048),
        mutated({"embedded": good}),
        # mutate only the appended zip, so the edits land in its headers and deflated member
        mutated({"zip": good[len(model):]}).map(lambda z: model + z),
        st.binary(max_size=512).map(lambda b: model + b"PK\x05\x06" + b),
    ))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.tflite"
        path.write_bytes(blob)
        try:
            spec = read_tflite_spec(path)
        except ModelSpecError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
            return
        assert spec is None or isinstance(spec, ModelSpec)


# --- the captcha segmenter --------------------------------------------------------------------------------
CAPTCHAS = {p.name: p.read_bytes() for p in sorted((DATA / "ezpass" / "raw").glob("0001*.jpg"))[:4]}
CAPTCHAS.update({p.name: p.read_bytes() for p in sorted((DATA / "captcha_images_v2").glob("*.png"))[:4]})


def check_segment(image: np.ndarray, expected: int | None) -> None:
    try:
        seg = segment(image, expected=expected)
    except DataError:
        return
    assert isinstance(seg, Segmentation)
    assert len(seg.boxes) == len(seg.crops)
    assert seg.ok == (seg.reason is None)
    if seg.ok and expected is not None:
        assert len(seg.boxes) == expected
    for (x, y, w, h), crop in zip(seg.boxes, seg.crops):
        assert w > 0 and h > 0
        assert crop.dtype == np.uint8 and crop.ndim == 2 and crop.size > 0


@FUZZ
@given(data=mutated(CAPTCHAS), expected=st.sampled_from([4, 5, None]))
def test_segment_mutated_real_captcha_files(data, expected):
    try:
        image = decode_image(data, "captcha")
    except DataError:
        return
    check_segment(image, expected)


@FUZZ
@given(data=st.data(), expected=st.sampled_from([4, 5, None]))
def test_segment_real_captchas_with_damaged_pixels(data, expected):
    name = data.draw(st.sampled_from(sorted(CAPTCHAS)))
    image = cv2.imdecode(np.frombuffer(CAPTCHAS[name], np.uint8), cv2.IMREAD_COLOR)
    for _ in range(data.draw(st.integers(1, 4))):
        h, w = image.shape[:2]
        y0, x0 = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
        y1, x1 = data.draw(st.integers(y0 + 1, h)), data.draw(st.integers(x0 + 1, w))
        kind = data.draw(st.sampled_from(["black", "white", "noise", "crop", "gray", "bgra"]))
        if kind == "black":
            image[y0:y1, x0:x1] = 0
        elif kind == "white":
            image[y0:y1, x0:x1] = 255
        elif kind == "noise":
            rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
            image[y0:y1, x0:x1] = rng.integers(0, 256, image[y0:y1, x0:x1].shape, dtype=np.uint8)
        elif kind == "crop":
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
        elif kind == "gray" and image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif kind == "bgra" and image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    check_segment(image, expected)


@FUZZ
@given(image=hnp.arrays(np.uint8, st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=80),
    st.tuples(st.integers(1, 60), st.integers(1, 220), st.sampled_from([1, 3, 4])))),
       expected=st.sampled_from([1, 4, 5, None]))
def test_segment_random_arrays(image, expected):
    check_segment(image, expected)
