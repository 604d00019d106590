"""Which step map to use when none is given (the measurements behind the thresholds: docs/scale.md)."""

from __future__ import annotations

import jax

from vaefp_jax.maps.base import StepMap
from vaefp_jax.maps.blocked import BlockedMap
from vaefp_jax.maps.dense import DenseMap

__all__ = ["default_step_map", "BLOCKED_MIN_POINTS", "BLOCKED_MIN_ELEMENTS", "BLOCKED_MAX_D"]

BLOCKED_MIN_POINTS = 2048     # CPU: from this many points (and BLOCKED_MIN_ELEMENTS) the blocked map is faster
BLOCKED_MIN_ELEMENTS = 1 << 23
BLOCKED_MAX_D = 64            # beyond, the blocked map's two distance products cost more than the cache saves


def default_step_map(num_points: int, num_tiles: int, dim: int, *, backend: str | None = None) -> StepMap:
    """:class:`DenseMap`, except on CPU for large problems (n ≥ ``BLOCKED_MIN_POINTS``,
    n K ≥ ``BLOCKED_MIN_ELEMENTS``, d ≤ ``BLOCKED_MAX_D``), where :class:`BlockedMap`
    keeps its working set in cache. Both give the same values up to rounding."""
    backend = backend or jax.default_backend()
    if (backend == "cpu" and num_points >= BLOCKED_MIN_POINTS and num_points * num_tiles >= BLOCKED_MIN_ELEMENTS
            and dim <= BLOCKED_MAX_D):
        return BlockedMap()
    return DenseMap()
