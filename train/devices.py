"""Training past one device: Keras 3's DataParallel on the JAX backend, across the local devices of
one process or of several processes (hosts) joined by `keras.distribution.initialize`.

`--devices N` counts devices per process; the global batch (`--batch-size`) is split over every
device of every process. Nothing here runs for `--devices 1` without `--coordinator`: that run is
exactly the one-device run of any backend.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecv.errors import ConfigError

log = logging.getLogger("edgecv.train")

# The variables Keras itself reads in keras.distribution.initialize() when no argument is given.
ENV_COORDINATOR = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


def require_jax_if_chosen() -> None:
    """KERAS_BACKEND=jax without JAX is a one-line error naming the extra (importing keras would
    otherwise end in a ModuleNotFoundError traceback)."""
    if os.environ.get("KERAS_BACKEND") == "jax" and importlib.util.find_spec("jax") is None:
        raise ConfigError("KERAS_BACKEND=jax, but JAX is not installed; install it with: pip install 'edgecv[jax]'")


def multi_process_args(cfg) -> tuple[str | None, int | None, int | None]:
    """(coordinator, num_processes, process_id) from the config, else from Keras's own variables."""
    coord = cfg.coordinator or os.environ.get(ENV_COORDINATOR) or None
    if coord is None:
        return None, None, None
    n, pid = cfg.num_processes, cfg.process_id
    try:
        if n is None and os.environ.get(ENV_PROCESSES):
            n = int(os.environ[ENV_PROCESSES])
        if pid is None and os.environ.get(ENV_PROCESS_ID):
            pid = int(os.environ[ENV_PROCESS_ID])
    except ValueError:
        raise ConfigError(f"{ENV_PROCESSES} and {ENV_PROCESS_ID} must be integers") from None
    if n is None or pid is None:
        raise ConfigError("--coordinator HOST:PORT needs --num-processes N and --process-id I "
                          f"(or {ENV_PROCESSES} and {ENV_PROCESS_ID})")
    if n < 1:
        raise ConfigError(f"--num-processes must be at least 1; got {n}")
    if not 0 <= pid < n:
        raise ConfigError(f"--process-id must be from 0 to {n - 1} (--num-processes {n}); got {pid}")
    return coord.split(",")[0], n, pid


def is_distributed(cfg) -> bool:
    return cfg.devices != 1 or multi_process_args(cfg)[0] is not None


@dataclass(frozen=True)
class DevicePlan:
    """The devices a data-parallel run uses: every process's first `local` devices."""

    devices: tuple[str, ...]     # global, e.g. ("cpu:0", "cpu:1"); process 0's first
    local: int                   # devices of this process in the mesh
    processes: int
    process_id: int
    batch_size: int              # global batch, a multiple of len(devices)

    @property
    def count(self) -> int:
        return len(self.devices)

    def record(self, dropped_per_epoch: int) -> dict[str, Any]:
        """What the run directory and the summary say about the devices used."""
        return {"backend": "jax", "count": self.count, "devices": list(self.devices),
                "processes": self.processes, "process_id": self.process_id,
                "per_device_batch": self.batch_size // self.count,
                "dropped_per_epoch": dropped_per_epoch}


def set_up(cfg) -> DevicePlan | None:
    """Joins the processes (when asked), picks the devices and sets Keras's distribution; before any
    model is built. None for a plain one-device run."""
    if not is_distributed(cfg):
        return None
    what = f"--devices {cfg.devices}" if cfg.devices != 1 else "--coordinator"
    import keras
    if keras.backend.backend() != "jax":
        raise ConfigError(f"{what} needs the JAX backend: set KERAS_BACKEND=jax (it is "
                          f"{keras.backend.backend()!r}) and install edgecv[jax]")
    coord, n_proc, pid = multi_process_args(cfg)
    if coord is not None:
        _join(coord, n_proc, pid)
    import jax
    local = jax.local_devices()
    names = ", ".join(f"{d.platform}:{d.id}" for d in local)
    want = len(local) if cfg.devices == "all" else int(cfg.devices)
    if want > len(local):
        raise ConfigError(f"--devices {cfg.devices}: this process has {len(local)} device(s) ({names}); "
                          f"use --devices all or a number up to {len(local)}")
    by_process: dict[int, list] = {}
    for d in jax.devices():  # every process's devices, in a fixed order all processes agree on
        by_process.setdefault(d.process_index, []).append(d)
    chosen = [d for p in sorted(by_process) for d in by_process[p][:want]]
    if len(chosen) != want * jax.process_count():
        raise ConfigError(f"--devices {cfg.devices}: another process has fewer than {want} device(s); "
                          "every process must use the same number")
    check_batch_split(cfg.batch_size, len(chosen))
    plan = DevicePlan(devices=tuple(f"{d.platform}:{d.id}" for d in chosen), local=want,
                      processes=jax.process_count(), process_id=jax.process_index(), batch_size=cfg.batch_size)
    # auto_shard_dataset=False: Keras shards only tf.data across processes; the batches here are
    # built by each process for its own slice of the global batch (trainer.ArraySequence).
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=list(plan.devices), auto_shard_dataset=False))
    log.info("data parallel over %d device(s) (%s), %d process(es); %d images per device and step",
             plan.count, ", ".join(plan.devices), plan.processes, plan.batch_size // plan.count)
    return plan


def check_batch_split(batch_size: int, devices: int) -> None:
    """Data parallel gives every device an equal slice of each global batch."""
    if batch_size % devices:
        lo, hi = batch_size - batch_size % devices, batch_size + devices - batch_size % devices
        raise ConfigError(f"--batch-size {batch_size} does not divide across {devices} devices; "
                          f"use a multiple of {devices} ({f'{lo} or {hi}' if lo else hi})")


def _join(coordinator: str, n: int, pid: int) -> None:
    import keras
    log.info("process %d of %d: joining the coordinator at %s", pid, n, coordinator)
    try:
        keras.distribution.initialize(job_addresses=coordinator, num_processes=n, process_id=pid)
    except (RuntimeError, ValueError) as e:  # a coordinator not reached in JAX's 300 s, a bad address
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot join the coordinator at {coordinator}: {first}") from None


class Predictor:
    """model outputs for every row of an array, across the plan's devices: the rows are padded to a
    multiple of the device count (copies of the last row; inference treats rows independently) and
    the padding cut off, so every image is counted exactly once."""

    def __init__(self, plan: DevicePlan, model, batch_size: int = 256):
        import jax
        self.plan, self.model = plan, model
        self.batch = max(plan.count, batch_size - batch_size % plan.count)
        self.fn = jax.jit(lambda tv, ntv, xb: model.stateless_call(tv, ntv, xb, training=False)[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import jax
        import keras
        n, d, p = len(x), self.plan.count, self.plan.processes
        if n == 0:
            raise ValueError("no rows to predict")
        if n % d:
            x = np.concatenate([x, np.repeat(x[-1:], d - n % d, axis=0)])
        tv = [v.value for v in self.model.trainable_variables]
        ntv = [v.value for v in self.model.non_trainable_variables]
        dist = keras.distribution.distribution()
        outs = []
        for s in range(0, len(x), self.batch):
            chunk = x[s:s + self.batch]
            k = len(chunk) // p
            mine = chunk[self.plan.process_id * k:(self.plan.process_id + 1) * k]
            arr = jax.make_array_from_process_local_data(dist.get_data_layout(chunk.shape).backend_layout, mine)
            out = self.fn(tv, ntv, arr)
            if p > 1:
                from jax.experimental import multihost_utils
                out = multihost_utils.process_allgather(out, tiled=True)
            outs.append(np.asarray(out))
        return np.concatenate(outs)[:n]


def needs_step_barrier(plan: DevicePlan) -> bool:
    return plan.local > 1 and plan.devices[0].startswith("cpu:")


def step_barrier_callback():
    """Waits for every device to finish each training step before the next is dispatched.

    Several CPU devices in one process (XLA_FLAGS=--xla_force_host_platform_device_count=N) share
    one thread pool, and XLA's in-process all-reduce between them deadlocks when steps are queued
    ahead (jax 0.10.2 on the 2-core dev box: the run aborts after 40 s with "Termination timeout for
    all reduce ... only 1 of them arrived"; a bare jitted data-parallel step deadlocked within 500
    queued calls, and ran 5,000 without a fault when each call was awaited). GPUs are not slowed by
    this: it is used for CPU devices only."""
    import jax
    import keras

    class StepBarrier(keras.callbacks.Callback):
        warned = False

        def on_train_batch_end(self, batch, logs=None):
            # The JAX trainer keeps the step's new state here for callbacks that must sync it.
            state = getattr(self.model, "_jax_state", None)
            if state is None and not self.warned:
                self.warned = True
                log.warning("this Keras does not expose the JAX training state; steps on several CPU "
                            "devices are not awaited and may deadlock")
            jax.block_until_ready((state, logs))

    return StepBarrier()


def validation_callback(plan: DevicePlan, x: np.ndarray, y: np.ndarray):
    """val_loss and val_accuracy each epoch from every validation image once. Keras's own validation
    would shard its last, ragged batch and fail (IndivisibleError); padding it with zero-weight rows
    keeps the accuracy exact but dilutes the loss (Keras divides by the padded batch size)."""
    import keras

    class ShardedValidation(keras.callbacks.Callback):
        predict = None  # compiled once per run, on the first epoch

        def on_epoch_end(self, epoch, logs=None):
            if self.predict is None:
                self.predict = Predictor(plan, self.model)
            probs = self.predict(x)
            loss = keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(y, probs))
            acc = keras.ops.convert_to_numpy(keras.metrics.sparse_categorical_accuracy(y, probs))
            reg = sum(float(keras.ops.convert_to_numpy(v)) for v in self.model.losses)
            if logs is not None:
                logs["val_loss"] = float(np.mean(loss, dtype=np.float64)) + reg
                logs["val_accuracy"] = float(np.mean(acc, dtype=np.float64))

    return ShardedValidation()
