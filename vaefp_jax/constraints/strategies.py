r"""Constraints on the decoder as strategy objects: none, a Lipschitz penalty, a Lipschitz bound.

A constraint turns the map value F(ψ) of eq. (15) into the next iterate's target.
Two modes of Appendix B (the algebra is in :mod:`~vaefp_jax.constraints.projection`):

* :class:`LipschitzStrength` (the paper's Figure 4): multipliers Ω̃ = strength ×
  support mask, fixed; the target is the projected update ψ = Pᵀ F(ψ) of
  Proposition 6 (corrected). Smooth in ψ, β and the strength, so a fixed point
  has implicit derivatives (u, u′, u″ in :func:`vaefp_jax.sweep`). Only W = Ω̃ ⊙ C
  matters, so L merely rescales the strength; :func:`strength_scale` gives a
  grid's natural unit.
* :class:`LipschitzBound` (beyond the paper): the hard bound C_ab ‖ψ_a − ψ_b‖² ≤ 1
  for a given L. The target is the s̄-weighted projection of F on the (convex)
  Lipschitz set (:mod:`~vaefp_jax.constraints.barrier`); a strictly feasible F is
  its own projection. The fixed point is a KKT point, not a smooth function of
  β where a constraint becomes active: it has no implicit derivative here.

Per-problem values (``strength``, ``L``) may be scalars or arrays broadcast
against the β of a solve; they are data of the solve, not part of the compiled
program (``static()`` strips them), so changing them does not recompile.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate
from vaefp_jax.constraints import barrier
from vaefp_jax.constraints.geometry import (
    SUPPORTS,
    lipschitz_coefficients,
    support_mask,
)
from vaefp_jax.constraints.projection import pair_violations, project

__all__ = ["Constraint", "Unconstrained", "LipschitzStrength", "LipschitzBound", "per_problem"]


def per_problem(name: str, value, num: int) -> np.ndarray:
    """A scalar or (B,) value broadcast to (B,) float64, finite, with a one-line error."""
    v = np.asarray(value, np.float64)
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, num)):
        raise ValueError(f"{name} must be a scalar or have shape ({num},) like betas, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return np.broadcast_to(v.reshape(-1), (num,)).copy()


class Constraint:
    """Base class. Subclasses are frozen dataclasses; the engine calls:

    * ``setup(grid, x, num) -> (per_problem, shared)``: arrays, the first (num, …)
      one row per problem, computed once at the boundary (x may be a tracer);
    * ``static()``: a hashable copy without the per-problem values (jit key);
    * ``start(psi0, theta, shared)``: the initial iterate (feasible in bound mode);
    * ``init_aux(psi0)``: per-problem state carried through the iteration;
    * ``update(value, psi, aux, t, problem) -> (target, aux)``;
    * ``report(psi, aux, theta, shared) -> (feasible, stats)``.
    """

    smooth = True               # the target is a smooth function of (ψ, θ)
    branches = False  # True: its update branches (lax.cond) per problem: map problems one at a time

    def setup(self, grid, x, num):
        return {}, {}

    def static(self):
        return self

    def start(self, psi0, theta, shared):
        return psi0

    def init_aux(self, psi0):
        return ()

    def update(self, value, psi, aux, t, problem):
        raise NotImplementedError

    def report(self, psi, aux, theta, shared):
        return jnp.bool_(True), {}


@dataclasses.dataclass(frozen=True)
class Unconstrained(Constraint):
    """No constraint: the target is F(ψ) itself (eq. 15)."""

    def update(self, value, psi, aux, t, problem):
        return value.psi, aux

    def __repr__(self):
        return "Unconstrained()"


def _check_geometry(support, r, weighting):
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    _validate.check_positive("r", r)
    if weighting not in (None, "lebesgue", "prior"):
        raise ValueError(f"weighting must be None, 'lebesgue' or 'prior', got {weighting!r}")


@dataclasses.dataclass(frozen=True)
class LipschitzStrength(Constraint):
    """Fixed multipliers Ω̃ = strength × support mask: ψ ← Pᵀ(Ω̃ ⊙ C) F(ψ).

    Attributes:
      strength: ≥ 0, a scalar or one per β (a tuple); 0 is exactly unconstrained.
      support: "local" (tile pairs closer than ``r`` in latent space) or "global" (all pairs).
      r: the radius of the local support.
      L: the Lipschitz constant in C_ab = π_a π_b / (L² K_ab).
      weighting: "lebesgue" or "prior" for K_ab (default by grid kind).
    """

    strength: float | tuple | None = 0.0
    support: str = "local"
    r: float = 0.2
    L: float = 1.0
    weighting: str | None = None

    def __post_init__(self):
        if self.strength is not None and np.ndim(self.strength) > 0:
            object.__setattr__(self, "strength", tuple(float(s) for s in np.ravel(self.strength)))
        _check_geometry(self.support, self.r, self.weighting)
        _validate.check_positive("L", self.L)

    def static(self):
        return dataclasses.replace(self, strength=None)

    def setup(self, grid, x, num):
        strength = per_problem("strength", self.strength, num)
        if np.any(strength < 0):
            raise ValueError(f"strength must be ≥ 0, got min {strength.min()}")
        C = lipschitz_coefficients(grid, self.L, self.weighting)
        mask = support_mask(grid, self.support, self.r)
        return {"strength": strength}, {"base": np.where(mask, C, 0.0)}

    def update(self, value, psi, aux, t, problem):
        W = problem.theta["strength"] * problem.shared["base"]
        return project(value.psi, value.tile_mass(problem.log_prior), W), aux

    def __repr__(self):
        s = "…" if isinstance(self.strength, tuple) else self.strength
        return f"LipschitzStrength(strength={s}, support={self.support!r}, r={self.r}, L={self.L})"


@dataclasses.dataclass(frozen=True)
class LipschitzBound(Constraint):
    """The hard bound C_ab ‖ψ_a − ψ_b‖² ≤ 1 on the support, by an interior-point projection per step.

    Attributes:
      L: > 0, a scalar or one per β (a tuple).
      support, r, weighting: as in :class:`LipschitzStrength`.
      gap: the barrier floor μ relative to the data variance (default 1e-9 in
        float64, 1e-5 in float32); the first projection starts at 1e-2 × the
        variance, later ones three decades above the floor.
      newton_steps: the most Newton steps per value of μ.
      feas_tol: a problem is feasible when the largest violation is ≤ feas_tol
        (the iterates are strictly feasible, so 0 by default).

    Cost: a dense (K d) × (K d) solve per Newton step: meant for K ≲ 400.
    """

    L: float | tuple | None = 1.0
    support: str = "local"
    r: float = 0.2
    weighting: str | None = None
    gap: float | None = None
    newton_steps: int = 50
    feas_tol: float = 0.0

    smooth = False
    branches = True

    def __post_init__(self):
        if self.L is not None and np.ndim(self.L) > 0:
            object.__setattr__(self, "L", tuple(float(v) for v in np.ravel(self.L)))
        _check_geometry(self.support, self.r, self.weighting)
        if self.gap is not None:
            _validate.check_positive("gap", self.gap)
        _validate.check_positive("feas_tol", self.feas_tol, allow_zero=True)
        _validate.check_int("newton_steps", self.newton_steps)

    def static(self):
        return dataclasses.replace(self, L=None)

    def setup(self, grid, x, num):
        L = per_problem("L", self.L, num)
        if np.any(L <= 0):
            raise ValueError(f"L must be > 0, got min {L.min()}")
        mask = support_mask(grid, self.support, self.r)
        if not mask.any():
            raise ValueError("the support mask is empty: no pairs to constrain (increase r)")
        var = jnp.maximum(jnp.mean(jnp.sum((x - jnp.mean(x, axis=0)) ** 2, axis=1)), jnp.finfo(x.dtype).tiny)
        gap = self.gap if self.gap is not None else (1e-9 if x.dtype == jnp.float64 else 1e-5)
        return {"L": L}, {"C1": lipschitz_coefficients(grid, 1.0, self.weighting), "mask": mask,
                          "mu_hi": 1e-2 * var, "mu_lo": gap * var}

    @staticmethod
    def _coefficients(theta, shared):
        return shared["C1"] / (theta["L"] * theta["L"]), shared["mask"]

    def start(self, psi0, theta, shared):
        return barrier.feasible_start(psi0, *self._coefficients(theta, shared))

    def init_aux(self, psi0):
        K = psi0.shape[-2]
        return jnp.zeros(psi0.shape[:-2] + (K, K), psi0.dtype)   # the multipliers Ω̃

    def update(self, value, psi, aux, t, problem):
        C, mask = self._coefficients(problem.theta, problem.shared)
        mu_hi, mu_lo = problem.shared["mu_hi"], problem.shared["mu_lo"]
        psi_f = value.psi
        s_bar = value.tile_mass(problem.log_prior)

        def projected(_):
            # First step: the whole barrier path; later ones start from the previous
            # projection (nearly centred), a few decades above the floor.
            hi = jnp.where(t == 0, mu_hi, jnp.minimum(mu_hi, 1e3 * mu_lo))
            return barrier.barrier_path(psi, psi_f, s_bar, C, mask, hi, mu_lo, self.newton_steps)

        # A strictly feasible F is its own projection (exactly; Ω̃ = 0).
        feasible_f = jnp.max(pair_violations(psi_f, C, mask)) < 0.0
        return jax.lax.cond(feasible_f, lambda _: (psi_f, jnp.zeros_like(aux)), projected, None)

    def report(self, psi, aux, theta, shared):
        worst = jnp.max(pair_violations(psi, *self._coefficients(theta, shared)))
        return worst <= self.feas_tol, {"max_violation": worst, "omega": aux}

    def __repr__(self):
        s = "…" if isinstance(self.L, tuple) else self.L
        return f"LipschitzBound(L={s}, support={self.support!r}, r={self.r})"
