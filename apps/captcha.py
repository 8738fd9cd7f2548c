"""`edgecv captcha solve` and `edgecv captcha annotate`: the Starter Bundle's captcha breaker as a
script, for the digit model (segment, then classify each digit) and the CTC model (read the
whole image, decode outside the graph).

Every image gets one answer line; an image that cannot be read, segmented or trusted gets an
`error` instead of a guess, and the exit code says whether any did.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgecv import decode
from edgecv.errors import ConfigError, DataError, ModelError
from edgecv.images import MAX_BYTES, decode_image, is_image_path, list_images, read_image
from edgecv.safeio import int_at_least, read_stream_limited

from .captcha_segment import segment

log = logging.getLogger("edgecv.captcha")

TASKS = ("captcha-digits", "captcha-ctc")
EXAMPLES = """examples:
  edgecv captcha solve ../shared/data/ezpass/raw/00000.jpg
  edgecv captcha solve ../shared/data/captcha_images_v2 --model captcha-v2 --json
  cat captcha.jpg | edgecv captcha solve - --min-confidence 0.9
  edgecv captcha annotate downloads/ --out digits/ --model captcha-ezpass

Use it only on systems you own or may test; see the README's responsible-use note.
"""


@dataclass
class Result:
    """One image's answer. text is None when the solver declined (see error)."""

    file: str
    text: str | None
    confidence: float | None
    error: str | None = None
    chars: tuple[float, ...] = field(default_factory=tuple)
    ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file, "text": self.text,
                             "confidence": None if self.confidence is None else round(self.confidence, 6)}
        if self.error:
            d["error"] = self.error
        return d

    def to_line(self) -> str:
        if self.error:
            return f"{self.file}\t-\t-\terror: {self.error}"
        return f"{self.file}\t{self.text}\t{self.confidence:.4f}"


class Solver:
    """A captcha model ready to solve images. Open with `Solver.open(model)`; model is a shipped
    name (captcha-ezpass, captcha-v2), a run directory, or a .tflite/.onnx/.keras file."""

    def __init__(self, predictor, min_confidence: float | None = None, expected: int | None = None,
                 decoder: str | None = None, beam: int = 10) -> None:
        from edgecv.ctc import DECODERS
        self.predictor = predictor
        self.spec = predictor.spec
        self.model_path = predictor.path
        if self.spec.task not in TASKS:
            raise ModelError(f"{self.model_path}: a {self.spec.task!r} model cannot solve captchas "
                             f"(needs task {' or '.join(TASKS)})")
        self.min_confidence = min_confidence
        self.expected = expected if expected is not None else int(self.spec.extra.get("digits", 4))
        # CTC models: the decoder named here, else the one the model was shipped with.
        self.decoder = decoder or str(self.spec.extra.get("decoder", "greedy"))
        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown CTC decoder {self.decoder!r}; choose {' or '.join(DECODERS)}")
        if int(beam) < 1:
            raise ConfigError(f"--beam must be at least 1; got {beam}")
        self.beam = int(beam)

    @classmethod
    def open(cls, model: str | os.PathLike = "captcha-ezpass", backend: str | None = None,
             min_confidence: float | None = None, expected: int | None = None,
             decoder: str | None = None, beam: int = 10) -> "Solver":
        from .predict import Predictor
        if min_confidence is not None and not 0.0 <= float(min_confidence) <= 1.0:
            raise ConfigError(f"--min-confidence must be between 0 and 1; got {min_confidence}")
        return cls(Predictor(model, backend=backend), min_confidence, expected, decoder, beam)

    # -- solving ------------------------------------------------------------------------------
    def solve_image(self, image: np.ndarray, name: str = "<image>") -> Result:
        """Solve one HxWx3 uint8 BGR (or HxW gray) image. Never raises for a bad image."""
        t0 = time.perf_counter()
        try:
            if self.spec.task == "captcha-digits":
                r = self._digits(image, name)
            else:
                r = self._ctc(image, name)
        except DataError as e:
            r = Result(name, None, None, str(e))
        r.ms = (time.perf_counter() - t0) * 1000
        if (r.error is None and self.min_confidence is not None and r.confidence is not None
                and r.confidence < self.min_confidence):
            r = Result(name, None, r.confidence, f"confidence {r.confidence:.3f} is below --min-confidence "
                       f"{self.min_confidence:g} (best guess {r.text!r})", r.chars, r.ms)
        return r

    def solve_file(self, path: str | os.PathLike) -> Result:
        try:
            image = read_image(path)
        except DataError as e:
            return Result(str(path), None, None, _strip_name(str(e), str(path)))
        return self.solve_image(image, str(path))

    def solve_bytes(self, data: bytes, name: str = "-") -> Result:
        try:
            image = decode_image(data, name)
        except DataError as e:
            return Result(name, None, None, _strip_name(str(e), name))
        return self.solve_image(image, name)

    def _digits(self, image: np.ndarray, name: str) -> Result:
        seg = segment(image, expected=self.expected)
        if not seg.ok:
            return Result(name, None, None, f"cannot segment: {seg.reason}")
        preds = decode.predictions(self.spec, self.predictor(list(seg.crops)), len(seg.crops))
        conf = [p.score for p in preds]
        return Result(name, "".join(p.label for p in preds), float(np.prod(conf)), chars=tuple(conf))

    def _ctc(self, image: np.ndarray, name: str) -> Result:
        from edgecv.preprocess import to_gray
        g = to_gray(image)
        if int(g.max()) - int(g.min()) < 16:
            return Result(name, None, None, "blank image: no characters found")
        y = self.predictor([image])
        d = decode.texts(self.spec, y, 1)[0]     # also checks the output's shape and values
        if self.decoder == "beam":
            from edgecv.ctc import beam_decode
            d = beam_decode(np.asarray(y, np.float32), self.spec.charset or "", self.spec.extra.get("blank"),
                            self.beam)[0]
        if not d.text:
            return Result(name, None, d.confidence, "no characters read")
        return Result(name, d.text, d.confidence, chars=d.char_confidences)

    def close(self) -> None:
        self.predictor.close()

    def __enter__(self) -> "Solver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _strip_name(message: str, name: str) -> str:
    """DataError messages start with the file name; the answer line already has it."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _inputs(items: Sequence[str]) -> Iterator[tuple[str, Path | None, str | None]]:
    """(name, path or None for stdin, error) per image named on the command line."""
    for item in items:
        if item == "-":
            yield "-", None, None
            continue
        p = Path(item)
        if p.is_dir():
            files = list_images(p)
            if not files:
                yield item, p, "no images in this folder"
            for f in files:
                yield str(f), f, None
        else:
            yield item, p, None


# -- CLI -----------------------------------------------------------------------------------------

def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("captcha", help="solve or annotate CAPTCHAs", description=__doc__, epilog=EXAMPLES,
                       formatter_class=fmt)
    s = p.add_subparsers(dest="captcha_command", metavar="COMMAND", required=True)
    sv = s.add_parser("solve", help="read the text of captcha images", epilog=EXAMPLES, formatter_class=fmt,
                      description="Print one line per image: file, text, confidence (tab-separated), or "
                                  "with --json one object per line. Exit 1 if any image failed.")
    sv.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="images, folders of images, or - (stdin)")
    sv.add_argument("--model", default="captcha-ezpass",
                    help="captcha-ezpass (4 digits, default), captcha-v2 (5 letters/digits), or a model "
                         "file / run directory")
    sv.add_argument("--backend", choices=("litert", "onnxruntime", "keras"))
    sv.add_argument("--json", action="store_true", help="one JSON object per line")
    sv.add_argument("--min-confidence", type=float, metavar="P",
                    help="decline (error) answers whose confidence is below P (0..1)")
    sv.add_argument("--digits", type=int_at_least(1), metavar="N",
                    help="characters per captcha for the digit model (default: its spec, 4)")
    sv.add_argument("--decode", choices=("greedy", "beam"),
                    help="CTC models: greedy (best class per step) or beam (prefix beam search for the "
                         "most probable text); default: the model's ModelSpec, else greedy")
    sv.add_argument("--beam", type=int_at_least(1), default=10, metavar="W",
                    help="prefixes kept per step by --decode beam (default 10)")
    sv.set_defaults(func=cmd_solve)

    an = s.add_parser("annotate", help="label digit crops by key press (needs a display)", epilog=EXAMPLES,
                      formatter_class=fmt,
                      description="Segment each captcha in RAW_DIR, show each digit, and save it under "
                                  "DIGITS_DIR/<key>/ when a key is pressed (space: skip, q/Esc: quit). "
                                  "With --model, digits the model is sure of are saved without asking.")
    an.add_argument("raw_dir", metavar="RAW_DIR")
    an.add_argument("--out", required=True, metavar="DIGITS_DIR")
    an.add_argument("--model", help="pre-label with this model; ask only when unsure")
    an.add_argument("--sure", type=float, default=0.99, help="model confidence that counts as sure (default 0.99)")
    an.add_argument("--digits", type=int_at_least(1), default=4, help="characters per captcha (default 4)")
    an.set_defaults(func=cmd_annotate)


def cmd_solve(args: argparse.Namespace) -> int:
    solver = Solver.open(args.model, backend=args.backend, min_confidence=args.min_confidence,
                         expected=args.digits, decoder=args.decode, beam=args.beam)
    failed = total = 0
    out = sys.stdout
    with solver:
        for name, path, error in _inputs(args.inputs):
            if error is not None:
                r = Result(name, None, None, error)
            elif path is None:
                try:  # bounded like an image file: `solve - < /dev/zero` is refused, not read whole
                    data = read_stream_limited(sys.stdin.buffer, MAX_BYTES, "stdin")
                except ConfigError as e:
                    r = Result(name, None, None, str(e))
                else:
                    r = solver.solve_bytes(data, "-")
            else:
                r = solver.solve_file(path)
            total += 1
            failed += r.error is not None
            out.write((json.dumps(r.to_json()) if args.json else r.to_line()) + "\n")
            out.flush()
    if failed:
        print(f"edgecv: {failed} of {total} image(s) not solved", file=sys.stderr)
        return 1
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from edgecv.runtime.sinks import display_available

    if not display_available():
        raise ConfigError("annotate shows each digit in a window and needs a display (DISPLAY and "
                          "WAYLAND_DISPLAY are unset); run it on a desktop or over ssh -X")
    raw = Path(args.raw_dir)
    if not raw.is_dir():
        raise DataError(f"{raw}: not a folder")
    files = [p for p in list_images(raw) if is_image_path(p)]
    if not files:
        raise DataError(f"{raw}: no images")
    solver = Solver.open(args.model, expected=args.digits) if args.model else None
    return annotate(files, Path(args.out), solver, args.digits, args.sure)


def annotate(files: list[Path], out: Path, solver: Solver | None, digits: int, sure: float) -> int:
    """The book's annotation loop: one window per digit; the key pressed names its folder."""
    import cv2

    counts: dict[str, int] = {}
    saved = skipped = 0
    try:
        for path in files:
            try:
                image = read_image(path)
            except DataError as e:
                log.warning("%s", e)
                continue
            seg = segment(image, expected=digits)
            if not seg.ok:
                log.warning("%s: %s; skipped", path, seg.reason)
                continue
            guesses: list[tuple[str, float]] = []
            if solver is not None:
                preds = decode.predictions(solver.spec, solver.predictor(list(seg.crops)), len(seg.crops))
                guesses = [(p.label, p.score) for p in preds]
            for k, crop in enumerate(seg.crops):
                key_name = None
                if guesses and guesses[k][1] >= sure:
                    key_name = guesses[k][0]
                else:
                    view = cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
                    title = "digit" + (f" (model: {guesses[k][0]} {guesses[k][1]:.2f})" if guesses else "")
                    cv2.imshow("edgecv annotate", view)
                    cv2.setWindowTitle("edgecv annotate", title)
                    key = cv2.waitKey(0) & 0xFF
                    if key in (ord("q"), 27):
                        print(f"saved {saved}, skipped {skipped}; stopped by the user")
                        return 0
                    if key == ord(" ") or not chr(key).isalnum():
                        skipped += 1
                        continue
                    key_name = chr(key).upper() if chr(key).isalpha() else chr(key)
                folder = out / key_name
                folder.mkdir(parents=True, exist_ok=True)
                counts[key_name] = counts.get(key_name, len(list(folder.glob("*.png"))))
                counts[key_name] += 1
                cv2.imwrite(str(folder / f"{counts[key_name]:06d}.png"), crop)
                saved += 1
    finally:
        cv2.destroyAllWindows()
    print(f"saved {saved}, skipped {skipped}")
    return 0
