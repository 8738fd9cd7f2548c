"""YuNet through ONNX Runtime with many frames in one call (`--detector yunet-ort`).

cv2.FaceDetectorYN runs one image per call. The 2023mar ONNX fixes its batch dimension at 1, but
nothing inside the graph depends on it: with the input's dim 0 made symbolic (in memory, with the
onnx package) ONNX Runtime runs N images, and each output (cls/obj/bbox/kps for strides 8, 16, 32)
holds the N images' anchors one after another on its anchor axis. Decoding follows OpenCV's
FaceDetectorYN (score = sqrt(cls * obj) clamped, box centre (col + dx) * stride, size exp(dw) *
stride, NMS on integer boxes) so the faces match the default detector's.

Providers: CUDA first where this onnxruntime has it, then CPU. On the 2-core AMD EPYC dev box one
frame a call through ONNX Runtime is about twice as fast as FaceDetectorYN and batching does not pay
on the CPU (docs/detection.md); batches are for the GPU, where a call costs more than its images.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import cv2
import numpy as np

from edgecv.errors import BackendError, ConfigError, ModelError

from .detect import Box, downscale

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
DIVISOR = 32  # the coarsest stride: the padded input is a multiple of it, as in FaceDetectorYN
PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def cuda_available() -> bool:
    """Whether this onnxruntime build has the CUDA provider (the libraries may still fail to load;
    the session then runs on CPU and YuNetBatchDetector.providers says so)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def batched_model_bytes(path: str | os.PathLike) -> bytes:
    """The YuNet ONNX with its input's batch dimension made symbolic ("N"), serialized."""
    try:
        import onnx
    except ImportError:
        raise BackendError("YuNet with more than one frame a call needs the onnx package to give it a batch "
                           "dimension: install edgecv[gpu] (or edgecv[export]), or detect one frame a call") from None
    try:
        model = onnx.load(str(path))
    except Exception as e:  # a truncated or foreign file: onnx raises DecodeError and friends
        raise ModelError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ModelError(f"{path}: expected YuNet (one NCHW input); found inputs "
                         f"{[i.name for i in inputs]}")
    dim0 = inputs[0].type.tensor_type.shape.dim[0]
    dim0.ClearField("dim_value")
    dim0.dim_param = "N"
    return model.SerializeToString()


def _padded(w: int, h: int) -> tuple[int, int]:
    return (-(-w // DIVISOR) * DIVISOR, -(-h // DIVISOR) * DIVISOR)


class YuNetBatchDetector:
    """YuNet on ONNX Runtime: `detect_batch(frames)` runs every frame of one size in one session call.

    Frames (HxWx3 uint8 BGR, any size) are downscaled to `width` like YuNetFaceDetector's, padded
    bottom/right to a multiple of 32, and boxes come back in each frame's own pixels. Frames of
    different sizes go in one call per size (padding one to another's size would change what the
    network sees at the border). `max_batch` caps the frames per call; `threads` sets ORT's intra-op
    threads (None: ORT's default). Not thread-safe: one per detect worker, like every detector.
    """

    name = "yunet-ort"

    def __init__(self, model: str | os.PathLike | None = None, width: int | None = 320,
                 score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 500,
                 max_batch: int = 8, threads: int | None = None, device: str = "auto") -> None:
        if model is None:
            from edgecv.data import resource_path

            model = resource_path("yunet", "models/face_detection_yunet_2023mar.onnx")
        if not os.path.isfile(model):
            raise ModelError(f"YuNet model not found: {model}")
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive integer; got {max_batch!r}")
        if device not in ("auto", "cuda", "cpu"):
            raise ConfigError(f"device must be auto, cuda or cpu; got {device!r}")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        available = set(ort.get_available_providers())
        wanted = ["CPUExecutionProvider"] if device == "cpu" else list(PROVIDERS)
        providers = [p for p in wanted if p in available]
        if device == "cuda" and "CUDAExecutionProvider" not in providers:
            log.warning("yunet-ort: CUDA was asked for but this onnxruntime has no CUDA provider "
                        "(install edgecv[gpu]); detecting on the CPU")
        # One frame a call runs the file as it is (its batch dimension is 1): no onnx package needed.
        data = batched_model_bytes(model) if max_batch > 1 else str(model)
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            how = f"with a batch dimension of {max_batch} frames" if max_batch > 1 else "one frame a call"
            raise ModelError(f"{model}: onnxruntime cannot load it {how} ({last})") from None
        self.providers = tuple(self.session.get_providers())
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = {f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES} - set(self.output_names)
        if missing:
            raise ModelError(f"{model}: not the YuNet 2023mar layout (outputs {sorted(missing)} missing)")
        self.width, self.max_batch = width, max_batch
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        self._grids: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}

    # -- the protocol ------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Box]:
        """HxWx3 uint8 BGR frame -> boxes in its pixels (a batch of one)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """Frames (HxWx3 uint8 BGR) -> one list of boxes per frame, in their order."""
        smalls, factors = [], []
        for image in images:
            small, f = downscale(image, self.width)
            if small.ndim == 2:
                small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
            smalls.append(small)
            factors.append(f)
        out: list[list[Box]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(smalls):
            by_size.setdefault((s.shape[1], s.shape[0]), []).append(i)
        for (w, h), idx in by_size.items():
            for k in range(0, len(idx), self.max_batch):
                part = idx[k:k + self.max_batch]
                for i, faces in zip(part, self._run([smalls[i] for i in part], w, h)):
                    f = factors[i]
                    out[i] = [Box(round(r[0] * f), round(r[1] * f), round(r[2] * f), round(r[3] * f), float(r[14]))
                              for r in faces]
        return out

    # -- one session call --------------------------------------------------------------------------
    def _run(self, smalls: list[np.ndarray], w: int, h: int) -> list[np.ndarray]:
        """Same-sized BGR images -> per image an Mx15 float32 array like FaceDetectorYN's rows
        (x, y, w, h, 5 landmark pairs, score), in NMS order."""
        pw, ph = _padded(w, h)
        blob = np.zeros((len(smalls), 3, ph, pw), np.float32)
        for i, s in enumerate(smalls):
            blob[i, :, :h, :w] = s.transpose(2, 0, 1)
        outs = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: blob})))
        grids = self._grid(pw, ph)
        return [self._decode(outs, grids, i) for i in range(len(smalls))]

    def _grid(self, pw: int, ph: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per stride: each anchor's column and row, in the network's row-major order."""
        key = (pw, ph)
        if key not in self._grids:
            grids = []
            for s in STRIDES:
                rows, cols = np.divmod(np.arange((ph // s) * (pw // s)), pw // s)
                grids.append((cols.astype(np.float32), rows.astype(np.float32)))
            self._grids[key] = grids
        return self._grids[key]

    def _decode(self, outs: dict[str, np.ndarray], grids: list[tuple[np.ndarray, np.ndarray]], i: int) -> np.ndarray:
        rows = []
        for s, (cols, rws) in zip(STRIDES, grids):
            n = len(cols)
            sl = slice(i * n, (i + 1) * n)  # this image's anchors on the batch-concatenated axis
            cls = np.clip(outs[f"cls_{s}"][0, sl, 0], 0, 1)
            obj = np.clip(outs[f"obj_{s}"][0, sl, 0], 0, 1)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.score_threshold)[0]
            if not len(keep):
                continue
            bbox = outs[f"bbox_{s}"][0, sl][keep]
            kps = outs[f"kps_{s}"][0, sl][keep]
            c, r = cols[keep], rws[keep]
            bw, bh = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
            face = np.empty((len(keep), 15), np.float32)
            face[:, 0] = (c + bbox[:, 0]) * s - bw / 2
            face[:, 1] = (r + bbox[:, 1]) * s - bh / 2
            face[:, 2], face[:, 3] = bw, bh
            face[:, 4:14:2] = (kps[:, 0::2] + c[:, None]) * s
            face[:, 5:14:2] = (kps[:, 1::2] + r[:, None]) * s
            face[:, 14] = score[keep]
            rows.append(face)
        if not rows:
            return np.zeros((0, 15), np.float32)
        faces = np.concatenate(rows)
        if len(faces) == 1:
            return faces
        # NMS on integer boxes (truncated), as FaceDetectorYN does.
        boxes = faces[:, :4].astype(np.int32).tolist()
        keep = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_threshold, self.nms_threshold,
                                1.0, self.top_k)
        return faces[np.asarray(keep, dtype=np.int64).reshape(-1)]
