"""CTC decoding in NumPy, outside the model graph: the captcha app, its training, the export gate.

CTC decoder ops are not TFLite builtins, so exported CRNN models stop at the per-time-step softmax
(N x T x K, blank = the last class unless told otherwise) and the text is read here. Greedy: best
class per step, repeats collapsed, blanks dropped. Beam (`beam_decode`): prefix beam search over
the charset, which answers the most probable *text* rather than the text of the most probable
*path*; the two differ when a text's probability is spread over many alignments.

The per-sequence confidence is the model's probability of the decoded *text*: the CTC forward
sum over every alignment that spells it, not just the greedy path. The greedy path's own
probability (the product of 25-50 per-step maxima) is low whenever the model hesitates about
*where* a character starts, which does not change the text, so it understates confidence; the
text probability only drops when another reading competes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgecv.errors import ModelError


@dataclass(frozen=True)
class Decoded:
    """One decoded sequence: text, path probability in [0, 1], one probability per character."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...] = field(default_factory=tuple)


def _check(probs: np.ndarray, charset: str, blank: int | None) -> tuple[np.ndarray, int]:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:
        probs = probs[None]
    if probs.ndim != 3:
        raise ModelError(f"CTC output must be N x T x K probabilities; got shape {probs.shape}")
    k = probs.shape[2]
    if k != len(charset) + 1:
        raise ModelError(f"CTC output has {k} classes but the charset {charset!r} needs "
                         f"{len(charset) + 1} (its {len(charset)} characters and the blank)")
    blank = k - 1 if blank is None else int(blank)
    if not 0 <= blank < k:
        raise ModelError(f"CTC blank index {blank} is outside 0..{k - 1}")
    return probs, blank


def text_probability(probs: np.ndarray, label: list[int], blank: int) -> float:
    """P(label | x) under CTC for one T x K probability matrix (forward algorithm, log space)."""
    t_steps = probs.shape[0]
    if not label:
        return float(np.exp(np.log(np.clip(probs[:, blank], 1e-30, 1.0)).sum()))
    ext = [blank]
    for c in label:
        ext += [c, blank]
    s_len = len(ext)
    logp = np.log(np.clip(probs, 1e-30, 1.0))
    alpha = np.full(s_len, -np.inf)
    alpha[0] = logp[0, blank]
    if s_len > 1:
        alpha[1] = logp[0, ext[1]]
    ext_arr = np.asarray(ext)
    # Skipping the blank between two labels is allowed only when the labels differ.
    can_skip = np.zeros(s_len, bool)
    can_skip[2:] = (ext_arr[2:] != blank) & (ext_arr[2:] != ext_arr[:-2])
    for t in range(1, t_steps):
        prev1 = np.r_[-np.inf, alpha[:-1]]
        prev2 = np.where(can_skip, np.r_[-np.inf, -np.inf, alpha[:-2]], -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, prev1), prev2) + logp[t, ext_arr]
    return float(np.exp(np.logaddexp(alpha[-1], alpha[-2])))


def greedy_decode(probs: np.ndarray, charset: str, blank: int | None = None) -> list[Decoded]:
    """Decode N x T x K (or T x K) per-step probabilities; charset maps class i to a character
    (classes after the blank shift down by one). Raises ModelError for a shape that does not fit."""
    probs, blank = _check(probs, charset, blank)
    best = probs.argmax(axis=2)                       # N x T
    pmax = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    out = []
    for n in range(best.shape[0]):
        row, prow = best[n], pmax[n]
        # A new character starts where the class changes and is not the blank.
        starts = np.flatnonzero((row != blank) & np.r_[True, row[1:] != row[:-1]])
        chars, confs, label = [], [], []
        for s in starts:
            c = int(row[s])
            e = s
            while e + 1 < len(row) and row[e + 1] == c:
                e += 1
            chars.append(charset[c if c < blank else c - 1])
            confs.append(float(prow[s:e + 1].max()))
            label.append(c)
        conf = min(1.0, text_probability(probs[n], label, blank))
        out.append(Decoded("".join(chars), conf, tuple(confs)))
    return out


def encode_labels(texts: list[str], charset: str, blank: int | None = None) -> np.ndarray:
    """Texts -> N x L int32 class indices padded with -1 (the layout train/captcha.py's loss reads).
    Raises ModelError for a character outside the charset."""
    k = len(charset) + 1
    blank = k - 1 if blank is None else int(blank)
    index = {ch: (i if i < blank else i + 1) for i, ch in enumerate(charset)}
    width = max((len(t) for t in texts), default=0)
    out = np.full((len(texts), width), -1, np.int32)
    for n, t in enumerate(texts):
        for j, ch in enumerate(t):
            if ch not in index:
                raise ModelError(f"label {t!r} has {ch!r}, which is not in the charset {charset!r}")
            out[n, j] = index[ch]
    return out


def collapse(best: np.ndarray, blank: int) -> list[tuple[int, ...]]:
    """N x T best classes -> each row's label sequence: repeats merged, blanks dropped (what greedy
    decoding reads, without the charset)."""
    out = []
    for row in np.asarray(best):
        keep = (row != blank) & np.r_[True, row[1:] != row[:-1]]
        out.append(tuple(int(c) for c in row[keep]))
    return out


def _char_confidences(probs: np.ndarray, label: list[int], blank: int) -> tuple[float, ...]:
    """Per character, the highest probability of its class on the best (Viterbi) alignment of
    `label`: what greedy decoding reports for its own path, for a text greedy did not read."""
    if not label:
        return ()
    ext = [blank]
    for c in label:
        ext += [c, blank]
    ext_arr = np.asarray(ext)
    s_len, t_steps = len(ext), probs.shape[0]
    logp = np.log(np.clip(probs, 1e-30, 1.0))
    can_skip = np.zeros(s_len, bool)
    can_skip[2:] = (ext_arr[2:] != blank) & (ext_arr[2:] != ext_arr[:-2])
    score = np.full(s_len, -np.inf)
    score[0] = logp[0, blank]
    score[1] = logp[0, ext[1]]
    back = np.zeros((t_steps, s_len), np.int64)
    idx = np.arange(s_len)
    for t in range(1, t_steps):
        cand = np.stack([score, np.r_[-np.inf, score[:-1]],
                         np.where(can_skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)])
        k = cand.argmax(axis=0)
        back[t] = idx - k
        score = cand[k, idx] + logp[t, ext_arr]
    s = s_len - 1 if s_len == 1 or score[-1] >= score[-2] else s_len - 2
    best = np.zeros(len(label))
    for t in range(t_steps - 1, -1, -1):
        if s % 2:
            best[s // 2] = max(best[s // 2], probs[t, ext[s]])
        s = back[t, s]
    return tuple(float(v) for v in best)


def beam_decode(probs: np.ndarray, charset: str, blank: int | None = None, beam: int = 10,
                prune: float = 1e-3) -> list[Decoded]:
    """Prefix beam search over N x T x K (or T x K) per-step probabilities, keeping `beam` prefixes
    per step. The surviving texts the beam rates highest are then scored exactly (`text_probability`, the same
    confidence greedy decoding reports) and the most probable one is the answer, so the answer's
    confidence is never below greedy's when greedy's text survives the beam. A class whose
    probability at a step is below `prune` starts no new prefix there (a text that needs it is
    at least 1000x less likely by that step); 0 tries every class, 5-10x slower."""
    probs, blank = _check(probs, charset, blank)
    if beam < 1:
        raise ModelError(f"CTC beam width must be at least 1; got {beam}")
    out = []
    for n in range(probs.shape[0]):
        p = probs[n].astype(np.float64)
        # prefix -> (P(ending in blank), P(ending in its last label)); each step renormalised by
        # its total so 25-50 products stay far from underflow (ranking is unchanged).
        beams: dict[tuple[int, ...], list[float]] = {(): [1.0, 0.0]}
        for t in range(p.shape[0]):
            row = p[t]
            starts = [c for c in np.flatnonzero(row >= max(prune, 1e-30)) if c != blank]
            nxt: dict[tuple[int, ...], list[float]] = {}
            for prefix, (pb, pnb) in beams.items():
                e = nxt.setdefault(prefix, [0.0, 0.0])
                e[0] += (pb + pnb) * row[blank]
                if prefix:
                    e[1] += pnb * row[prefix[-1]]       # the last label repeated, not a new one
                for c in starts:
                    c = int(c)
                    ext = nxt.setdefault(prefix + (c,), [0.0, 0.0])
                    # Repeating the last label starts a new character only after a blank.
                    ext[1] += (pb if prefix and c == prefix[-1] else pb + pnb) * row[c]
            top = sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam]
            total = sum(v[0] + v[1] for _, v in top) or 1.0
            beams = {k: [v[0] / total, v[1] / total] for k, v in top}
        # Exact rescoring only for the texts the beam itself rates within 100x of its best: the
        # beam's sum misses only pruned alignments, which cannot lift a text that far.
        top = max(v[0] + v[1] for v in beams.values())
        scored = [(text_probability(probs[n], list(k), blank), k) for k, v in beams.items()
                  if v[0] + v[1] >= 0.01 * top]
        conf, label = max(scored, key=lambda x: (x[0], -len(x[1])))
        text = "".join(charset[c if c < blank else c - 1] for c in label)
        out.append(Decoded(text, min(1.0, conf), _char_confidences(probs[n], list(label), blank)))
    return out


DECODERS = ("greedy", "beam")


def decode_ctc(probs: np.ndarray, charset: str, blank: int | None = None, decoder: str = "greedy",
               beam: int = 10) -> list[Decoded]:
    """`greedy_decode` or `beam_decode` by name (the ModelSpec's extra.decoder or a --decode flag)."""
    if decoder == "greedy":
        return greedy_decode(probs, charset, blank)
    if decoder == "beam":
        return beam_decode(probs, charset, blank, beam)
    raise ModelError(f"unknown CTC decoder {decoder!r}; choose {' or '.join(DECODERS)}")
