r"""Newton's method on ψ − F(ψ) = 0, unguarded: it follows the branch it starts on.

Each step solves (I − J) δ = F(ψ) − ψ with the step map's Jacobian operator at ψ
(:meth:`vaefp_jax.maps.StepMap.jacobian`, by a solve of :data:`vaefp_jax.operators.NEWTON_SOLVES`)
and moves to ψ + δ, accepted whatever the free energy does. Near a root where I − J is
invertible this converges quadratically (exact solves) or linearly at the Krylov solve's
relative residual (1e-6 a step), to that root **whether or not it is stable**: unlike
:class:`~vaefp_jax.Accelerated`, whose Newton steps must lower the free energy, it continues
a branch past the β where it loses stability. That is what the refinement of β_c needs
(:func:`vaefp_jax.refine_bracket`: is the merged branch still stable at this β?), so the
answer comes with ρ(∂F/∂ψ) at it (``stats["spectral_radius"]``) and ``stable`` = ρ < 1.

It stops at ``max_steps`` steps or once ‖F(ψ) − ψ‖_F ≤ ``tol`` (the refinement sets it to the
rounding level of the map, 100 eps max|x| √(K d)).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaefp_jax import _validate, operators
from vaefp_jax.constraints.strategies import Unconstrained
from vaefp_jax.engine.problem import residual
from vaefp_jax.iterations.base import Iteration, Outcome, default_tol

__all__ = ["Newton", "NewtonCarry"]


class NewtonCarry(NamedTuple):
    """ψ (K, d), ``fpsi`` F(ψ), ``residual`` ‖F(ψ) − ψ‖_F, the problem's ``state`` (passed
    through) and ``evals`` (map evaluations)."""

    psi: jax.Array
    fpsi: jax.Array
    residual: jax.Array
    state: object
    evals: jax.Array


@dataclasses.dataclass(frozen=True)
class Newton(Iteration):
    """Newton's method on a branch (module docstring).

    Attributes:
      tol: on ‖F(ψ) − ψ‖_F (``None``: 1e-10 in float64, 1e-5 in float32).
      max_steps: Newton steps at most.
      newton_solve: the linear solve of a step, as in :class:`~vaefp_jax.Accelerated`
        ("auto": Woodbury where the map has the factors and n is small, else Krylov).
      spectral: how ρ is estimated at the answer: "lanczos" (valid at a fixed point) or "power".
      spectral_iters: its steps.
    """

    tol: float | None = None
    max_steps: int = 8
    newton_solve: str = "auto"
    spectral: str = "lanczos"
    spectral_iters: int = 48
    init_noise: float = 0.0

    def __post_init__(self):
        if self.tol is not None:
            _validate.check_positive("tol", self.tol)
            object.__setattr__(self, "tol", float(self.tol))
        object.__setattr__(self, "max_steps", _validate.check_int("max_steps", self.max_steps, 0))
        object.__setattr__(self, "spectral_iters", _validate.check_int("spectral_iters", self.spectral_iters, 2))
        operators.check_newton_solve(self.newton_solve)
        operators.spectral_estimate(self.spectral)

    @property
    def step_limit(self) -> int:
        return self.max_steps

    def resolved(self, dtype) -> "Newton":
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))

    def check(self, step_map, constraint) -> None:
        if not isinstance(constraint, Unconstrained):
            raise ValueError(f"Newton continues a branch of the unconstrained map, got {constraint!r}")
        operators.check_newton_solve(self.newton_solve, step_map.factored)

    def init(self, problem, psi0, state0, key) -> NewtonCarry:
        fpsi = problem.evaluate(psi0).psi
        return NewtonCarry(psi=psi0, fpsi=fpsi, residual=residual(fpsi, psi0), state=state0, evals=jnp.int32(1))

    def step(self, problem, c: NewtonCarry) -> NewtonCarry:
        (K, d), n = c.psi.shape, problem.x.shape[0]
        solve = operators.newton_solve(self.newton_solve, n, K, d, problem.step_map.factored)
        psi = c.psi + solve(problem.jacobian(c.psi), c.fpsi - c.psi)
        fpsi = problem.evaluate(psi).psi
        return c._replace(psi=psi, fpsi=fpsi, residual=residual(fpsi, psi), evals=c.evals + 2)

    def terminate(self, problem, c: NewtonCarry) -> jax.Array:
        assert self.tol is not None, "resolved() sets tol"
        return c.residual <= self.tol

    def postprocess(self, problem, c: NewtonCarry) -> Outcome:
        rho = operators.SPECTRAL[self.spectral](problem.jacobian(c.psi), c.psi, self.spectral_iters)[0]
        return Outcome(psi=c.psi, state=c.state, steps=c.evals, residual=c.residual, trajectory=None,
                       stable=rho < 1, stats={"spectral_radius": rho})

    def __repr__(self):
        return (f"Newton(tol={self.tol}, max_steps={self.max_steps}, newton_solve={self.newton_solve!r}, "
                f"spectral={self.spectral!r})")
