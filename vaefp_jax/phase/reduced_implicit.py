r"""Derivatives along the reduced model's branches by implicit differentiation.

The reduced map of :mod:`vaefp_jax.phase.reduced` (free masses) acts on the state
z = (ψ, log γ) ∈ ℝ^{m(d+1)} (ψ (m, d) flattened row by row, then log γ (m,)):

    F(z, β, x) = (ψ', log γ'),   ψ'_a = Σ_i p(a|i) x_i / Σ_i p(a|i),   log γ'_a = log (1/n) Σ_i p(a|i).

A branch is a curve of fixed points z*(β) of F(·, β, x). With G(z, β) = F(z, β) − z, the
implicit function theorem differentiates G(z*(β), β) = 0 once and twice:

    G_z z′ + G_β = 0,
    G_z z″ + D²G[(z′, 1), (z′, 1)] = 0,

where D²G[(z′, 1), (z′, 1)] = G_zz[z′, z′] + 2 G_zβ[z′] + G_ββ is the second derivative of
t ↦ G(z + t z′, β + t) at t = 0 (= the same of F, since G − F is linear). With J = ∂F/∂z,

    (I − J) z′ = F_β,        (I − J) z″ = D²F[(z′, 1), (z′, 1)].

A quantity q(z, β) along the branch then has the total derivatives of t ↦ q(z + t z′ + t²/2 z″,
β + t) at t = 0: q′ = q_z z′ + q_β, q″ = D²q[(z′, 1), (z′, 1)] + q_z z″. Every directional
derivative here is a nested ``jax.jvp``; no formula is written by hand.

The gauge of log γ. The map sees log γ only through log γ − log Σ_b γ_b, so J annihilates the
direction (0, 1_m) (J (0, 1_m) = 0, eigenvalue 1 of I − J), and its output is normalised,
Σ_a γ'_a = 1, so (0, γ)ᵀ J = 0. I − J is therefore invertible exactly when the physical
(normalised) part of J has no eigenvalue 1, and z′, z″ solve to tangents of the normalised
manifold (Σ_a γ_a dlog γ_a = 0: they are images of F_β + J z′ and friends, which lie in it).
The inputs log γ are normalised first, so that z is a fixed point of F itself.

The critical temperature of cluster a. Cluster a splits below β_c, the root of

    g(β, x) = Λ(β, x) − β,   Λ(β, x) = λ_max(C_a(z*(β, x), β, x)),
    C_a = Σ_i p(i|a) (x_i − ψ_a)(x_i − ψ_a)ᵀ

(:func:`vaefp_jax.phase.reduced.critical_temperature`). Along the root, (∂_β Λ − 1) dβ_c +
∂_x Λ · dx = 0 with total derivatives through z*: dz* = (I − J)⁻¹ (F_x dx + F_β dβ). For a
simple top eigenvalue with unit eigenvector v, dλ_max = vᵀ dC_a v, so with v held fixed
Λ̂(z, β, x) = vᵀ C_a(z, β, x) v = Σ_i p(i|a) ((x_i − ψ_a)·v)² has the same first derivatives as
λ_max. One adjoint solve

    (I − J)ᵀ μ = ∂Λ̂/∂z

collects the path through z*: with S(β, x) = μ · F(z*, β, x) + Λ̂(z*, β, x) (z*, μ, v frozen),
∂_β Λ = ∂S/∂β and ∂_x Λ · dx = ∂S/∂x · dx, so

    dβ_c = −(∂S/∂x · dx) / (∂S/∂β − 1).

:func:`critical_beta` returns the caller's root β_c as a ``jax.custom_jvp`` whose tangent is that
formula: one ``jax.jvp`` of S in x, linear in dx, so JAX transposes it for ``jax.grad``
(:func:`critical_beta_gradient`, one reverse pass: the whole (n, d) gradient at the cost of
one map evaluation). The solve and v depend only on primal values.

Linear solves. For a state size m(d+1) ≤ ``dense_max`` (2048) J is built densely by
``jax.jacfwd`` (m(d+1) JVPs of F) and I − J solved by :func:`vaefp_jax.linalg.solve` (safe on
CPU under ``vmap``); above it, matrix-free restarted GMRES (:func:`vaefp_jax.linalg.gmres`) on
v ↦ v − J v (one JVP of F per product; the adjoint v ↦ v − Jᵀ v by a VJP). The fixed point
should be converged well below the accuracy wanted: an error δz moves z′ by ~‖∂J/∂z‖ δz/(1−ρ).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from vaefp_jax import linalg
from vaefp_jax.phase import reduced
from vaefp_jax.precision import matmul

__all__ = ["BranchDerivatives", "branch_derivatives", "critical_beta", "critical_beta_gradient"]

DENSE_MAX = 2048
"""Largest state size m(d+1) for which I − ∂F/∂z is built densely (above: GMRES)."""


class BranchDerivatives(NamedTuple):
    """u (B,), du = du/dβ (B,), d2u = d²u/dβ² (B,) along the branch, u the order parameter
    (1/n) Σ_i Σ_a p(a|i) ‖x_i − ψ_a‖² (:func:`vaefp_jax.phase.reduced.order_parameter`)."""

    u: jax.Array
    du: jax.Array
    d2u: jax.Array


class _Solver(NamedTuple):
    """Static options of the linear solves (hashable: a ``jit`` static / ``nondiff`` argument)."""

    dense_max: int
    gmres_tol: float | None
    restart: int
    cycles: int
    chunk: int | None


def _options(dense_max, gmres_tol, restart, cycles, chunk):
    return _Solver(int(dense_max), None if gmres_tol is None else float(gmres_tol), int(restart), int(cycles),
                   None if chunk is None else int(chunk))


def _flatten(psi, log_mass):
    return jnp.concatenate([psi.reshape(-1), log_mass])


def _unflatten(z, m, d):
    return z[: m * d].reshape(m, d), z[m * d:]


def _flat_map(z, beta, x, m, chunk):
    """F(z, β, x) on the flat state z = (ψ flattened, log γ) (module docstring)."""
    psi, lm = _unflatten(z, m, x.shape[1])
    new_psi, new_lm, _ = reduced._step(psi, lm, x, beta, True, chunk)
    return _flatten(new_psi, new_lm)


def _jacobian(z, beta, x, m, chunk):
    """J = ∂F/∂z at (z, β) as a dense (m(d+1), m(d+1)) matrix."""
    return jax.jacfwd(lambda v: _flat_map(v, beta, x, m, chunk))(z)


def _gmres_tol(dtype, opts):
    if opts.gmres_tol is not None:
        return opts.gmres_tol
    return 1e-12 if dtype == jnp.float64 else 1e-5


def _fixed_point_solver(z, beta, x, m, opts, transpose=False):
    """A function rhs ↦ (I − J)⁻¹ rhs (or (I − J)⁻ᵀ rhs with ``transpose``) at (z, β): dense LU when
    the state size is ≤ ``opts.dense_max``, else GMRES with J v by a JVP (Jᵀ v by a VJP)."""
    size = z.shape[0]
    F = lambda v: _flat_map(v, beta, x, m, opts.chunk)
    if size <= opts.dense_max:
        A = jnp.eye(size, dtype=z.dtype) - jax.jacfwd(F)(z)
        if transpose:
            A = A.T
        return lambda rhs: linalg.solve(A, rhs)
    if transpose:
        _, vjp = jax.vjp(F, z)
        op = lambda v: v - vjp(v)[0]
    else:
        op = lambda v: v - jax.jvp(F, (z,), (v,))[1]
    tol = _gmres_tol(z.dtype, opts)
    restart = min(opts.restart, size)
    return lambda rhs: linalg.gmres(op, rhs, tol=tol, restart=restart, cycles=opts.cycles)


def _order_parameter_flat(z, beta, x, m):
    psi, lm = _unflatten(z, m, x.shape[1])
    return reduced.order_parameter(psi, lm, x, beta)


def _second_directional(f, t0):
    """(f(t0), f′(t0), f″(t0)) of a function of one scalar by nested ``jax.jvp``."""
    one = jnp.ones_like(t0)
    (value, first), (_, second) = jax.jvp(lambda t: jax.jvp(f, (t,), (one,)), (t0,), (one,))
    return value, first, second


@functools.partial(jax.jit, static_argnames=("opts",))
def _branch_derivatives(x, psi, log_mass, betas, opts):
    m = psi.shape[1]

    def one(p, lm, beta):
        z = _flatten(p, lm - logsumexp(lm))
        solve = _fixed_point_solver(z, beta, x, m, opts)
        F = lambda v, b: _flat_map(v, b, x, m, opts.chunk)
        zero = jnp.zeros_like(beta)
        # (I − J) z′ = F_β
        z1 = solve(jax.jvp(lambda b: F(z, b), (beta,), (jnp.ones_like(beta),))[1])
        # (I − J) z″ = D²F[(z′, 1), (z′, 1)]
        _, _, d2F = _second_directional(lambda t: F(z + t * z1, beta + t), zero)
        z2 = solve(d2F)
        u, du, d2u = _second_directional(
            lambda t: _order_parameter_flat(z + t * z1 + 0.5 * t * t * z2, beta + t, x, m), zero)
        return u, du, d2u

    u, du, d2u = jax.vmap(one)(psi, log_mass, betas)
    return BranchDerivatives(u=u, du=du, d2u=d2u)


def branch_derivatives(x: ArrayLike, psi: ArrayLike, log_mass: ArrayLike, betas: ArrayLike, *,
                       dense_max: int = DENSE_MAX, gmres_tol: float | None = None, restart: int = 50,
                       cycles: int = 40, chunk: int | None = 8192) -> BranchDerivatives:
    """u, du/dβ and d²u/dβ² along a branch of reduced fixed points, by implicit differentiation.

    Args:
      x: (n, d) data (float64 for u″ near transitions; float32 works).
      psi: (B, m, d) the fixed points ψ*(β) at each β (solved by the caller, e.g. by
        :func:`~vaefp_jax.phase.reduced.solve_reduced` with free masses).
      log_mass: (B, m) their log masses (normalised here; the map ignores the gauge).
      betas: (B,) the temperatures.
      dense_max: state sizes m(d+1) up to this use a dense Jacobian and LU; above, GMRES.
      gmres_tol: GMRES's relative residual (default 1e-12 in float64, 1e-5 in float32).
      restart: GMRES's Krylov vectors per cycle.
      cycles: GMRES's cycles.
      chunk: points per block of the map's sums (None: one block), as in
        :func:`~vaefp_jax.phase.reduced.solve_reduced`; it also bounds the dense Jacobian's
        working memory (``jax.jacfwd`` carries m(d+1) tangents through each block).

    Returns:
      :class:`BranchDerivatives` of arrays (B,): z′ from (I − J) z′ = F_β, z″ from
      (I − J) z″ = D²F[(z′, 1), (z′, 1)], then u′ and u″ as the first and second derivatives of
      u along t ↦ (z + t z′ + t²/2 z″, β + t) (module docstring). One compiled program, ``vmap``
      over β.
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    opts = _options(dense_max, gmres_tol, restart, cycles, chunk)
    return _branch_derivatives(x, jnp.asarray(psi, dtype), jnp.asarray(log_mass, dtype), jnp.asarray(betas, dtype),
                               opts)


def _projected_lambda(z, beta, x, m, cluster, v):
    """Λ̂ = vᵀ C_a v = Σ_i p(i|a) ((x_i − ψ_a)·v)² with v fixed: λ_max(C_a)'s first derivatives."""
    psi, lm = _unflatten(z, m, x.shape[1])
    w = reduced._cluster_weights(psi, lm, x, beta)[:, cluster]
    proj = matmul(x - psi[cluster], v)
    return jnp.sum(w * proj * proj)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _critical_beta(x, psi, log_mass, beta_c, cluster, opts):
    return jax.lax.stop_gradient(beta_c)


@_critical_beta.defjvp
def _critical_beta_jvp(opts, primals, tangents):
    x, psi, log_mass, beta_c, cluster = primals
    dx = tangents[0]                    # ψ, log γ and β_c are the caller's root: functions of x alone
    x, psi, log_mass, beta_c = (jax.lax.stop_gradient(a) for a in (x, psi, log_mass, beta_c))
    m = psi.shape[0]
    z = _flatten(psi, log_mass - logsumexp(log_mass))
    _, v = reduced.critical_temperature(psi, log_mass, x, beta_c, cluster)
    lam_z = jax.grad(_projected_lambda)(z, beta_c, x, m, cluster, v)
    mu = _fixed_point_solver(z, beta_c, x, m, opts, transpose=True)(lam_z)     # (I − J)ᵀ μ = ∂Λ̂/∂z

    def S(beta, xx):
        return jnp.vdot(mu, _flat_map(z, beta, xx, m, opts.chunk)) + _projected_lambda(z, beta, xx, m, cluster, v)

    dS_dbeta = jax.jvp(lambda b: S(b, x), (beta_c,), (jnp.ones_like(beta_c),))[1]
    dS_dx = jax.jvp(lambda xx: S(beta_c, xx), (x,), (dx,))[1]
    return beta_c, -dS_dx / (dS_dbeta - 1.0)


def critical_beta(x, psi, log_mass, beta_c, cluster, *, dense_max: int = DENSE_MAX, gmres_tol: float | None = None,
                  restart: int = 50, cycles: int = 40, chunk: int | None = 8192) -> jax.Array:
    """The critical temperature β_c of cluster ``cluster`` as a function of the data, differentiable in x.

    The primal value is ``beta_c`` itself: the caller's root of λ_max(C_a(z*(β))) = β, with
    ``psi`` (m, d), ``log_mass`` (m,) the fixed point at β_c. Its derivative is that of the root
    β_c(x) through the branch z*(β, x) (module docstring):

        dβ_c = −(∂_x Λ · dx) / (∂_β Λ − 1),   Λ(β, x) = λ_max(C_a(z*(β, x), β, x)),

    with total derivatives by the implicit function theorem and one adjoint solve. Works under
    ``jax.jvp``, ``jax.grad``, ``jax.jit`` and ``jax.vmap``; the tangents of ``psi``, ``log_mass`` and
    ``beta_c`` are ignored (they are determined by x). Needs a simple top eigenvalue of C_a and
    ∂_β Λ ≠ 1 (a transversal root). x: (n, d); returns a scalar of x's dtype. Options as in
    :func:`branch_derivatives`.
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    opts = _options(dense_max, gmres_tol, restart, cycles, chunk)
    return _critical_beta_jit(x, jnp.asarray(psi, dtype), jnp.asarray(log_mass, dtype), jnp.asarray(beta_c, dtype),
                          jnp.asarray(cluster, jnp.int32), opts)


@functools.partial(jax.jit, static_argnames=("opts",))
def _critical_beta_jit(x, psi, log_mass, beta_c, cluster, opts):
    return _critical_beta(x, psi, log_mass, beta_c, cluster, opts)


@functools.partial(jax.jit, static_argnames=("opts",))
def _critical_beta_gradient(x, psi, log_mass, beta_c, cluster, opts):
    return jax.grad(_critical_beta)(x, psi, log_mass, beta_c, cluster, opts)


def critical_beta_gradient(x, psi, log_mass, beta_c, cluster, *, dense_max: int = DENSE_MAX,
                           gmres_tol: float | None = None, restart: int = 50, cycles: int = 40,
                           chunk: int | None = 8192) -> jax.Array:
    """dβ_c/dx (n, d): ``jax.grad`` of :func:`critical_beta` in x (arguments as there)."""
    x = jnp.asarray(x)
    dtype = x.dtype
    opts = _options(dense_max, gmres_tol, restart, cycles, chunk)
    return _critical_beta_gradient(x, jnp.asarray(psi, dtype), jnp.asarray(log_mass, dtype),
                                   jnp.asarray(beta_c, dtype), jnp.asarray(cluster, jnp.int32), opts)
