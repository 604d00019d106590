"""Which step map to use when none is given (the measurements behind the rule: docs/scale.md)."""

from __future__ import annotations

import os

import jax

from vaefp_jax.engine.schedules import dense_bytes
from vaefp_jax.maps.base import StepMap
from vaefp_jax.maps.blocked import BlockedMap
from vaefp_jax.maps.dense import DenseMap

__all__ = ["default_step_map", "DENSE_MEMORY_FRACTION", "BLOCKED_MAX_D", "physical_memory"]

# CPU: the dense map while DENSE_COPIES (n, K) arrays take at most this share of the RAM (the
# implicit derivatives and the Jacobian factors of a sweep hold a few more such arrays)
DENSE_MEMORY_FRACTION = 0.125
BLOCKED_MAX_D = 64            # beyond, the blocked map's two distance products cost more than the cache saves


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (``os.sysconf``), or None where it cannot say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def default_step_map(num_points: int, num_tiles: int, dim: int, *, backend: str | None = None, itemsize: int = 4,
                     memory_bytes: int | None = None) -> StepMap:
    """:class:`DenseMap`, except on CPU when its arrays would not fit: with d ≤ ``BLOCKED_MAX_D``,
    :class:`BlockedMap` once ``DENSE_COPIES`` (n, K) arrays of ``itemsize`` bytes exceed
    ``DENSE_MEMORY_FRACTION`` of ``memory_bytes`` (default: the machine's RAM). Both give the
    same values up to rounding. With reused shifts (one pass over the pairs) the dense map
    is the faster one at every size measured on CPU, up to n = 10⁴, K = 128² (docs/scale.md);
    the blocked map's virtue is its memory (a few blocks per β, whatever n and K)."""
    backend = backend or jax.default_backend()
    if backend != "cpu" or dim > BLOCKED_MAX_D:
        return DenseMap()
    memory_bytes = physical_memory() if memory_bytes is None else memory_bytes
    if memory_bytes and dense_bytes(num_points, num_tiles, itemsize) > DENSE_MEMORY_FRACTION * memory_bytes:
        return BlockedMap()
    return DenseMap()
