"""The dense map: eq. (14)–(15) with the full (K, n) logits, :mod:`vaefp_jax.equations` itself."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

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
    two: the reference).

    ``reuse_shifts`` (one-exponential form only, default True): inside an iteration
    (:meth:`evaluate_warm`) take the shifts of the exponentials from the previous
    evaluation's normalisers (log c_i, log Σ_i m_ib) instead of two maxima over the
    logits (:func:`vaefp_jax.equations.evaluate_shifted`): one pass over the (K, n) pairs
    instead of three. When the previous shifts do not keep every sum in range (the first
    step, a large move at small β) the value is recomputed by :func:`evaluate`; the result
    equals :meth:`evaluate`'s to rounding either way. ``False`` always takes the maxima."""

    form: str = "one_exponential"
    reuse_shifts: bool = True

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {sorted(FORMS)}, got {self.form!r}")
        if not isinstance(self.reuse_shifts, bool):
            raise ValueError(f"reuse_shifts must be True or False, got {self.reuse_shifts!r}")

    def evaluate(self, psi, x, beta, log_prior):
        return FORMS[self.form](psi, x, beta, log_prior)

    @property
    def _warm(self) -> bool:
        return self.reuse_shifts and self.form == "one_exponential"

    def init_state(self, num_points, num_tiles, dtype):
        """(log c (n,), log Σ m (K,)) of "no previous evaluation": +inf, which
        :func:`~vaefp_jax.equations.evaluate_shifted` rejects (E = 0), so the first
        evaluation takes the maxima."""
        if not self._warm:
            return ()
        return jnp.full((num_points,), jnp.inf, dtype), jnp.full((num_tiles,), jnp.inf, dtype)

    def evaluate_warm(self, psi, x, beta, log_prior, state):
        """(MapValue, its (log c, log Σ m)): one pass with the previous normalisers as
        shifts, or, where they fail the range check, :meth:`evaluate`. The fallback is a
        ``while_loop`` of at most one trip, not a ``cond``: under ``vmap`` a ``cond`` runs
        both branches for every lane, a ``while_loop`` runs its body only while some lane
        needs it."""
        if not self._warm:
            return self.evaluate(psi, x, beta, log_prior), state
        value, ok = equations.evaluate_shifted(psi, x, beta, log_prior, *state)

        def recompute(carry):
            return self.evaluate(psi, x, beta, log_prior), jnp.ones_like(ok)

        value, _ = jax.lax.while_loop(lambda carry: ~carry[1], recompute, (value, ok))
        return value, (value.log_c, value.log_mass)

    def order_parameter(self, psi, x, beta, log_prior):
        return equations.order_parameter(psi, x, beta, log_prior)

    def __repr__(self):
        args = [f"form={self.form!r}"] if self.form != "one_exponential" else []
        args += [] if self.reuse_shifts else ["reuse_shifts=False"]
        return f"DenseMap({', '.join(args)})"
