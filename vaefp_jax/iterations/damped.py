"""Damped fixed-point iteration, the paper's Appendix A protocol and a tight preset.

    ψ^{t+1} = (1 − damping) G(ψ^t) + damping ψ^t,

with G the problem's target (F of eq. 15, or its constrained image), until
‖ψ^{t+1} − ψ^t‖_F < tol or ``max_steps``.

:meth:`Damped.paper`, Appendix A: exponential smoothing with α = 0.9, at most
400 steps, tolerance 1e-3, ψ^0 at the tile centres plus uniform noise in
[−0.1, 0.1]. *Reading of α*: we take α as the smoothing factor of standard
exponential smoothing, the weight of the new value, s_t = α F(ψ^{t−1}) + (1 − α) s_{t−1};
so ``damping = 1 − α = 0.1``. The other reading (α the weight of the old
iterate) is ``Damped.paper(alpha_on_old=True)``, ``damping = 0.9``: it takes about
3.5 times the steps on Figure 3's setting, and the two readings often stop at
different configurations (different numbers of distinct fixed points at small β);
``benchmarks/alpha_readings.py`` measures both (results in ``benchmarks/RESULTS.md``).

:meth:`Damped.tight` is undamped (the map is coordinate descent on the free
energy, so damping is not needed for stability) with a tolerance near the
working precision, for accurate fixed points (derivatives, phase detection).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaefp_jax import _validate
from vaefp_jax.engine.problem import residual
from vaefp_jax.iterations.base import Iteration, Outcome, default_tol

__all__ = ["Damped", "DampedCarry"]


class DampedCarry(NamedTuple):
    """ψ (K, d), the problem's state, the steps taken (map evaluations) and the last ‖Δψ‖_F."""

    psi: jax.Array
    state: object
    steps: jax.Array
    residual: jax.Array


@dataclasses.dataclass(frozen=True)
class Damped(Iteration):
    """``damping`` (weight of the previous iterate, in [0, 1)), ``tol`` (on the
    Frobenius norm of ψ^{t+1} − ψ^t; ``None``: 1e-10 in float64, 1e-5 in float32),
    ``max_steps``, ``init_noise`` (half-width of the uniform noise of the default ψ^0)."""

    damping: float = 0.1
    tol: float | None = 1e-3
    max_steps: int = 400
    init_noise: float = 0.1

    @classmethod
    def paper(cls, alpha: float = 0.9, alpha_on_old: bool = False) -> "Damped":
        """Appendix A. ``alpha`` is the exponential-smoothing factor; by default it
        weights the new map value (``damping = 1 − alpha``)."""
        return cls(damping=alpha if alpha_on_old else 1.0 - alpha, tol=1e-3, max_steps=400, init_noise=0.1)

    @classmethod
    def tight(cls, max_steps: int = 20_000) -> "Damped":
        """Undamped, tolerance by dtype (1e-10 in float64, 1e-5 in float32)."""
        return cls(damping=0.0, tol=None, max_steps=max_steps, init_noise=0.1)

    def __post_init__(self):
        for name in ("damping", "tol", "init_noise"):   # plain numbers: the object is a jit key
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if not (0.0 <= float(self.damping) < 1.0):
            raise ValueError(f"damping must be in [0, 1), got {self.damping}")
        if self.tol is not None:
            _validate.check_positive("tol", self.tol)
        object.__setattr__(self, "max_steps", _validate.check_int("max_steps", self.max_steps))
        _validate.check_positive("init_noise", self.init_noise, allow_zero=True)

    def resolved(self, dtype) -> "Damped":
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))

    @property
    def step_limit(self) -> int:
        """One map evaluation per step: ``max_steps``."""
        return self.max_steps

    def init(self, problem, psi0, state0, key) -> DampedCarry:
        return DampedCarry(psi=psi0, state=state0, steps=jnp.int32(0), residual=jnp.asarray(jnp.inf, psi0.dtype))

    def step(self, problem, carry: DampedCarry) -> DampedCarry:
        """One damped step from ψ: ψ' = (1 − damping) G(ψ) + damping ψ, and ‖ψ' − ψ‖_F."""
        target, state, _ = problem.update(carry.psi, carry.state, carry.steps)
        new = (1 - self.damping) * target + self.damping * carry.psi
        return DampedCarry(psi=new, state=state, steps=carry.steps + 1, residual=residual(new, carry.psi))

    def terminate(self, problem, carry: DampedCarry) -> jax.Array:
        assert self.tol is not None, "resolved() sets tol"
        return carry.residual < self.tol

    def postprocess(self, problem, carry: DampedCarry) -> Outcome:
        return Outcome(psi=carry.psi, state=carry.state, steps=carry.steps, residual=carry.residual,
                       trajectory=None, stable=None, stats={})

    def __repr__(self):
        return f"Damped(damping={self.damping:g}, tol={self.tol}, max_steps={self.max_steps})"
