"""Learning-rate schedules as functions of the epoch (so a resumed run gets the right rate)."""
from __future__ import annotations

from typing import Callable, Sequence

from edgecv.errors import ConfigError, unknown

SCHEDULES = ("none", "step", "poly", "piecewise", "cosine")


def step_decay(init_lr: float, factor: float = 0.5, drop_every: int = 10) -> Callable[[int], float]:
    """lr = init * factor ** floor((1 + epoch) / drop_every) (Practitioner ch. 16)."""
    return lambda epoch: float(init_lr * factor ** ((1 + epoch) // drop_every))


def poly_decay(init_lr: float, max_epochs: int, power: float = 1.0) -> Callable[[int], float]:
    """lr = init * (1 - epoch / max_epochs) ** power; power 1 is linear decay to zero."""
    return lambda epoch: float(init_lr * (1 - min(epoch, max_epochs) / float(max_epochs)) ** power)


def piecewise(boundaries: Sequence[int], values: Sequence[float]) -> Callable[[int], float]:
    """Olafenwa's piecewise-constant schedule: values[i] until boundaries[i] epochs."""
    if len(values) != len(boundaries) + 1:
        raise ConfigError(f"piecewise schedule needs one more value than boundaries; got {len(boundaries)} "
                          f"boundaries and {len(values)} values")

    def lr(epoch: int) -> float:
        for b, v in zip(boundaries, values):
            if epoch < b:
                return float(v)
        return float(values[-1])
    return lr


def cosine_decay(init_lr: float, max_epochs: int, warmup: int = 0, floor: float = 0.0) -> Callable[[int], float]:
    """Linear warm-up over `warmup` epochs, then half a cosine from init_lr down to floor * init_lr
    at the last epoch (Loshchilov & Hutter's SGDR without restarts)."""
    import math

    def lr(epoch: int) -> float:
        if epoch < warmup:
            return float(init_lr * (epoch + 1) / (warmup + 1))
        span = max(1, max_epochs - 1 - warmup)
        frac = min(1.0, (epoch - warmup) / span)
        return float(init_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))))
    return lr


def make_schedule(name: str, init_lr: float, epochs: int, **kw) -> Callable[[int], float]:
    if name == "none":
        return lambda epoch: float(init_lr)
    if name == "step":
        return step_decay(init_lr, kw.get("factor", 0.5), kw.get("drop_every", max(1, epochs // 4)))
    if name == "poly":
        return poly_decay(init_lr, epochs, kw.get("power", 1.0))
    if name == "piecewise":
        bounds = kw.get("boundaries") or [epochs // 2, 3 * epochs // 4]
        values = kw.get("values") or [init_lr, init_lr / 10, init_lr / 100]
        return piecewise(bounds, values)
    if name == "cosine":
        return cosine_decay(init_lr, epochs, kw.get("warmup", 0), kw.get("floor", 0.0))
    raise ConfigError(unknown("schedule", name, SCHEDULES))
