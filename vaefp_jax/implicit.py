r"""Implicit differentiation of fixed points ψ* = F(ψ*, θ), to any order.

For a fixed point ψ*(θ) of a smooth map F with (I − ∂F/∂ψ) invertible, the
implicit function theorem gives the tangent

    dψ* = (I − ∂F/∂ψ)⁻¹ (∂F/∂θ · dθ).

:func:`implicit_fixed_point` wraps a (non-differentiable) solver in a
``jax.custom_jvp`` whose rule is that formula written in ordinary, differentiable
JAX operations: the rule calls the wrapped function itself for ψ*, so
differentiating the rule again applies the same formula one order up. Hence
``jax.jacfwd(jax.jacfwd(f))``, ``jax.grad(jax.grad(f))`` and ``jax.hessian(f)``
all work: forward mode directly, reverse mode by JAX transposing the (linear)
tangent computation, which only needs the linear solve to be transposable.
The solver's loop is never differentiated (no unrolling): its output passes
through ``lax.stop_gradient``.

The linear solve is a strategy object (a callable ``(matvec, rhs, F, psi, theta) -> v``):

* :class:`Dense` — builds ∂F/∂ψ from K·d JVPs ((K·d)² entries, K·d JVPs of
  F, through whatever step map and constraint F uses) and solves by LU. Exact;
  right for K·d up to a few thousand.
* :class:`Woodbury` — the unconstrained tile map's exact structured solve, from the step
  map's Jacobian factors (:meth:`vaefp_jax.maps.DenseMap.jacobian`), O(K d n² + n³); needs
  θ = {"x", "beta", "log_prior", …}.
* :class:`GMRES` — matrix-free, one JVP of F per Krylov vector; for large
  problems. Near a phase transition I − ∂F/∂ψ is nearly singular and Krylov
  methods need many iterations: prefer the exact solves there.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from vaefp_jax import linalg, operators
from vaefp_jax.maps.base import StepMap
from vaefp_jax.maps.dense import DenseMap

__all__ = ["implicit_fixed_point", "Dense", "Woodbury", "GMRES", "jacobian_matrix", "spectral_radius"]

Map = Callable[[jax.Array, object], jax.Array]


def jacobian_matrix(F: Map, psi: jax.Array, theta) -> jax.Array:
    """∂F/∂ψ at (ψ, θ) as a dense (ψ.size, ψ.size) matrix (ψ.size JVPs of F)."""
    return operators.dense_matrix(operators.linearized(lambda p: F(p, theta), psi), psi.shape)


@dataclasses.dataclass(frozen=True)
class Dense:
    """Solve (I − ∂F/∂ψ) v = rhs by LU on the dense Jacobian (any map, any smooth constraint)."""

    def __call__(self, matvec, rhs, F, psi, theta):
        J = jacobian_matrix(F, psi, theta)
        A = jnp.eye(J.shape[0], dtype=J.dtype) - J
        return linalg.solve(A, rhs.reshape(-1)).reshape(psi.shape)


@dataclasses.dataclass(frozen=True)
class Woodbury:
    """The exact structured solve of the unconstrained tile map, θ = {"x", "beta", "log_prior", …}:
    ∂F/∂ψ = blockdiag(A) − U Vᵀ in closed form, the factors of ``step_map``'s Jacobian (a map
    with ``factored``, the dense map by default; :func:`vaefp_jax.operators.woodbury_solve`)."""

    step_map: StepMap = DenseMap()

    def __post_init__(self):
        if not (isinstance(self.step_map, StepMap) and self.step_map.factored):
            raise ValueError(f"Woodbury needs a step map whose Jacobian has the Woodbury factors (DenseMap), got "
                             f"{self.step_map!r}; use GMRES or Dense")

    def __call__(self, matvec, rhs, F, psi, theta):
        op = self.step_map.jacobian(psi, theta["x"], theta["beta"], theta["log_prior"])
        return operators.woodbury_solve(op, rhs)


@dataclasses.dataclass(frozen=True)
class GMRES:
    """Matrix-free GMRES (``jax.scipy.sparse.linalg.gmres`` inside a
    ``lax.custom_linear_solve`` whose transpose solves with the transposed
    operator, so reverse mode works). Products by JVP of F, or, with ``step_map`` (for the
    unconstrained tile map, θ = {"x", "beta", "log_prior", …}), by that map's own Jacobian
    operator (:meth:`vaefp_jax.maps.StepMap.jacobian`: the blocked map's closed form costs
    about one evaluation a product where a JVP of its evaluation costs several)."""

    tol: float = 1e-10
    restart: int = 50
    maxiter: int | None = None
    step_map: StepMap | None = None

    def _gmres(self, mv, b):
        return linalg.gmres(mv, b, tol=self.tol, restart=self.restart, cycles=self.maxiter)

    def __call__(self, matvec, rhs, F, psi, theta):
        if self.step_map is not None:
            op = self.step_map.jacobian(psi, theta["x"], theta["beta"], theta["log_prior"])
            matvec = lambda v: v - op.mv(v)
        return jax.lax.custom_linear_solve(matvec, rhs, solve=self._gmres, transpose_solve=self._gmres)


def implicit_fixed_point(F: Map, solve: Callable[..., jax.Array], theta: object,
                         linear_solve: Callable[..., jax.Array] = Dense(), *,
                         psi_init: ArrayLike | None = None) -> jax.Array:
    """ψ*(θ) = ``solve(θ)``, a fixed point of ``F(·, θ)``, differentiable in θ.

    Args:
      F: the map, ``F(psi, theta) -> psi`` (pure; θ a pytree of arrays).
      solve: ``solve(theta) -> psi_star``, or ``solve(theta, psi_init)`` when
        ``psi_init`` is given (any iteration; never differentiated).
      theta: pytree of the parameters to differentiate with respect to.
      linear_solve: :class:`Dense`, :class:`Woodbury`, :class:`GMRES` or any callable
        ``(matvec, rhs, F, psi, theta) -> v``.
      psi_init: optional starting point handed to ``solve`` (for example an
        already converged ψ*, with ``solve`` returning it or polishing it). It is
        not differentiated: the fixed point does not depend on where the
        iteration started (within a basin).
    """
    if psi_init is None:
        return _implicit(F, lambda t, _: solve(t), linear_solve, theta, jnp.zeros(()))
    return _implicit(F, solve, linear_solve, theta, psi_init)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _implicit(F, solve, linear_solve, theta, psi_init):
    return jax.lax.stop_gradient(solve(theta, psi_init))


@_implicit.defjvp
def _implicit_jvp(F, solve, linear_solve, primals, tangents):
    theta, psi_init = primals
    dtheta, _ = tangents  # the start of the iteration does not move the fixed point
    psi = _implicit(F, solve, linear_solve, theta, psi_init)
    # ∂F/∂θ · dθ at the fixed point.
    _, rhs = jax.jvp(lambda t: F(psi, t), (theta,), (dtheta,))

    def matvec(v):
        return v - jax.jvp(lambda p: F(p, theta), (psi,), (v,))[1]

    dpsi = linear_solve(matvec, rhs, F, psi, theta)
    return psi, dpsi


def spectral_radius(F: Map, psi: jax.Array, theta, *, num_iter: int = 200, key=None) -> jax.Array:
    """Spectral radius of ∂F/∂ψ at (ψ, θ): :func:`vaefp_jax.operators.power_iteration` with JVPs
    of F (one per iteration; robust to complex or nearly equal-modulus top eigenvalues)."""
    op = operators.linearized(lambda p: F(p, theta), psi)
    return operators.power_iteration(op, psi, num_iter, key)[0]
