"""The dense map: eq. (14)–(15) with the full (K, n) logits, :mod:`vaefp_jax.equations` itself."""

from __future__ import annotations

import dataclasses

from vaefp_jax import equations
from vaefp_jax.maps.base import StepMap

__all__ = ["DenseMap"]


FORMS = {"one_exponential": equations.evaluate, "log_space": equations.evaluate_log_space}


@dataclasses.dataclass(frozen=True)
class DenseMap(StepMap):
    """F(ψ) from one (K, n) array of logits (XLA keeps two or three such arrays
    alive per β). Fastest while they fit in cache; see :class:`BlockedMap` beyond.

    ``form``: "one_exponential" (default; :func:`vaefp_jax.equations.evaluate`, one
    exp per (tile, point) pair) or "log_space" (:func:`vaefp_jax.equations.evaluate_log_space`,
    two: the reference)."""

    form: str = "one_exponential"

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {sorted(FORMS)}, got {self.form!r}")

    def evaluate(self, psi, x, beta, log_prior):
        return FORMS[self.form](psi, x, beta, log_prior)

    def order_parameter(self, psi, x, beta, log_prior):
        return equations.order_parameter(psi, x, beta, log_prior)

    def __repr__(self):
        return "DenseMap()" if self.form == "one_exponential" else f"DenseMap(form={self.form!r})"
