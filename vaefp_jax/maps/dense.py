"""The dense map: eq. (14)–(15) with the full (K, n) logits, :mod:`vaefp_jax.equations` itself."""

from __future__ import annotations

import dataclasses

from vaefp_jax import equations
from vaefp_jax.maps.base import StepMap

__all__ = ["DenseMap"]


@dataclasses.dataclass(frozen=True)
class DenseMap(StepMap):
    """F(ψ) from one (K, n) array of logits (XLA keeps two or three such arrays
    alive per β). Fastest while they fit in cache; see :class:`BlockedMap` beyond."""

    def evaluate(self, psi, x, beta, log_prior):
        return equations.evaluate(psi, x, beta, log_prior)

    def order_parameter(self, psi, x, beta, log_prior):
        return equations.order_parameter(psi, x, beta, log_prior)

    def __repr__(self):
        return "DenseMap()"
