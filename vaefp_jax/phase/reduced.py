r"""Proposition 5's reduced fixed point: m distinct fixed points ψ_a with masses γ_a.

Coincident tiles stay coincident: F_b of eq. (15) depends on the tile b only through ψ_b
(m_ib = e^{−‖x_i−ψ_b‖²/2β}/c_i), so a configuration of m distinct fixed points is exactly
an m-tile problem whose prior masses are the summed masses of the tiles in each group:

    p(a|i) = γ_a e^{−‖x_i−ψ_a‖²/2β} / Σ_b γ_b e^{−‖x_i−ψ_b‖²/2β},
    ψ_a ← Σ_i p(a|i) x_i / Σ_i p(a|i).

With the masses *fixed* (``free_masses=False``) this is the tile model of eq. (14)–(15)
itself, tested against it. In the high-capacity limit (Prop. 5) the mass γ_a of the set Ω_a
solves Σ_i e^{−H_ia/β} / Σ_b e^{−H_ib/β} γ_b = n with H_ia = ‖x_i − ψ_a‖²/2, that is
γ_a = (1/n) Σ_i p(a|i): with ``free_masses=True`` the masses follow that update too
(mass-constrained deterministic annealing, Rose 1998, at temperature T = 2β; EM for an
isotropic Gaussian mixture of variance β with free weights). One step costs O(n m d).

Critical temperatures. Perturb the members of a group a inside the group, δψ_b = w_b v with
Σ_b π_b w_b = 0. To first order c_i does not change (the perturbations cancel in it), and

    δF_b = w_b (C_a/β) v,   C_a = Σ_i p(i|a) (x_i − ψ_a)(x_i − ψ_a)ᵀ,   p(i|a) = p(a|i)/Σ_j p(a|j),

so the group is stable exactly while β > λ_max(C_a) (:func:`critical_temperature`); for one
cluster C = Cov and β_c = λ_max(Cov). The mass update leaves the condition unchanged to first
order, since Σ_i p(i|a)(x_i − ψ_a) = 0 at the fixed point (tests/test_reduced.py measures the
split mode's one-step growth against λ_max(C_a)/β).

This module is the first piece of the reduced phase analysis (issue 34): the map, its
fixed point batched over β, u and the critical temperature of a cluster. Continuation on
cooling, the split tree and the command line come next.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from vaefp_jax.precision import einsum, matmul

__all__ = ["ReducedFixedPoint", "critical_temperature", "log_posterior", "order_parameter", "reduced_step",
           "solve_reduced"]


def _sq_dist(x, psi):
    """(n, m) ‖x_i − ψ_a‖², by differences (exact to rounding for any d; O(n m d) memory)."""
    diff = x[:, None, :] - psi[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def log_posterior(psi, log_mass, x, beta):
    """(n, m) log p(a|i) = log γ_a − ‖x_i − ψ_a‖²/2β − log Σ_b γ_b e^{−‖x_i − ψ_b‖²/2β}.

    psi: (m, d); log_mass: (m,) log γ_a (need not be normalised); x: (n, d); beta: ()."""
    logits = log_mass[None, :] - _sq_dist(x, psi) / (2.0 * beta)
    return logits - logsumexp(logits, axis=1, keepdims=True)


def reduced_step(psi, log_mass, x, beta, free_masses: bool = True):
    """One step (ψ, log γ) → (ψ', log γ') of the reduced map (module docstring): ψ'_a the
    p(a|i)-weighted mean of the data, γ'_a = (1/n) Σ_i p(a|i) when ``free_masses``, else γ."""
    log_p = log_posterior(psi, log_mass, x, beta)
    log_total = logsumexp(log_p, axis=0)                           # (m,) log Σ_i p(a|i)
    weights = jnp.exp(log_p - log_total[None, :])                  # (n, m) p(i|a)
    new_psi = matmul(weights.T, x)
    new_log_mass = log_total - jnp.log(x.shape[0]) if free_masses else log_mass
    return new_psi, new_log_mass


def order_parameter(psi, log_mass, x, beta):
    """u = (1/n) Σ_i Σ_a p(a|i) ‖x_i − ψ_a‖²: the reconstruction error of eq. (3) at the reduced point."""
    p = jnp.exp(log_posterior(psi, log_mass, x, beta))
    return jnp.sum(p * _sq_dist(x, psi)) / x.shape[0]


@jax.jit
def critical_temperature(psi, log_mass, x, beta, cluster):
    """(λ_max(C_a), v): the β below which cluster ``cluster`` splits (module docstring) and the
    direction it splits along, from the d × d matrix C_a (d up to a few hundred)."""
    log_p = log_posterior(psi, log_mass, x, beta)[:, cluster]
    w = jnp.exp(log_p - logsumexp(log_p))                          # (n,) p(i|a)
    r = x - psi[cluster]
    C = einsum("i,ij,ik->jk", w, r, r)
    evals, evecs = jnp.linalg.eigh(C)
    return evals[-1], evecs[:, -1]


class ReducedFixedPoint(NamedTuple):
    """Fixed points of the reduced map for B values of β: ``psi`` (B, m, d), ``log_mass``
    (B, m), ``steps`` (B,), ``residual`` (B,) the last step's ‖Δψ‖_F + ‖Δγ‖_1, ``converged`` (B,)."""

    psi: jax.Array
    log_mass: jax.Array
    steps: jax.Array
    residual: jax.Array
    converged: jax.Array


def solve_reduced(x, betas, psi0, log_mass0, *, free_masses: bool = True, tol: float | None = None,
                  max_steps: int = 100_000) -> ReducedFixedPoint:
    """The reduced fixed point from (ψ⁰ (m, d), log γ⁰ (m,)) for every β of ``betas`` (B,), by
    plain steps of :func:`reduced_step` (EM), ``vmap``-ed over β. ``tol`` on ‖Δψ‖_F + ‖Δγ‖_1
    (None: 1e-12 × the data's RMS spread in float64, 1e-6 × in float32)."""
    x = jnp.asarray(x)
    dtype = x.dtype
    betas = jnp.asarray(betas, dtype)
    psi0, log_mass0 = jnp.asarray(psi0, dtype), jnp.asarray(log_mass0, dtype)
    spread = jnp.sqrt(jnp.sum(jnp.var(x, axis=0)))
    if tol is None:
        tol = (1e-12 if dtype == jnp.float64 else 1e-6) * spread
    return _solve(x, betas, psi0, log_mass0, jnp.asarray(tol, dtype), bool(free_masses), int(max_steps))


@functools.partial(jax.jit, static_argnames=("free_masses", "max_steps"))
def _solve(x, betas, psi0, log_mass0, tol, free_masses, max_steps):
    def one(beta):
        def cond(s):
            _, _, t, res = s
            return (t < max_steps) & (res >= tol)

        def body(s):
            psi, lm, t, _ = s
            new_psi, new_lm = reduced_step(psi, lm, x, beta, free_masses)
            res = jnp.sqrt(jnp.sum((new_psi - psi) ** 2)) + jnp.sum(jnp.abs(jnp.exp(new_lm) - jnp.exp(lm)))
            return new_psi, new_lm, t + 1, res

        init = (psi0, log_mass0, jnp.int32(0), jnp.asarray(jnp.inf, x.dtype))
        psi, lm, t, res = jax.lax.while_loop(cond, body, init)
        return psi, lm, t, res

    psi, lm, steps, res = jax.vmap(one)(betas)
    return ReducedFixedPoint(psi=psi, log_mass=lm, steps=steps, residual=res, converged=res < tol)
