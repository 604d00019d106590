r"""An interior-point (log-barrier) projection on the Lipschitz set, for the bound mode.

Each outer step of a bound-constrained solve replaces F(ψ) by its s̄-weighted
projection on {ψ : h_ab(ψ) = C_ab ‖ψ_a − ψ_b‖² − 1 ≤ 0 on the support}, a convex
QCQP, solved here by the barrier method: Newton's method on
½ Σ_a s̄_a ‖ψ_a − F_a‖² − μ Σ log(−h_ab) with an exact fraction-to-the-boundary
rule and Armijo backtracking, μ decreasing by 10 down to its floor. The
iterates stay strictly feasible, and the barrier gives the multipliers
Ω̃_ab = μ / (−h_ab) ≥ 0 with which stationarity is exactly ψ = Pᵀ F of
Proposition 6 and complementary slackness holds to Ω̃_ab (−h_ab) = μ.

Why not projected dual ascent Ω̃ ← [Ω̃ + η g]₊ (the obvious scheme): tiles in
holes have s̄_a ~ 1e-30, the dual is then very ill-conditioned and the
iteration oscillates for every step size we tried; ADMM converges, but
sublinearly. See docs/lipschitz.md, also for the Newton fallback below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vaefp_jax import linalg
from vaefp_jax.equations import squared_distances
from vaefp_jax.precision import einsum

__all__ = ["barrier_value", "max_feasible_step", "barrier_newton", "barrier_path", "feasible_start"]


def barrier_value(psi, psi_f, s_bar, C, mask, mu):
    """φ_μ(ψ) = ½ Σ_a s̄_a ‖ψ_a − F_a‖² − μ Σ_{a<b} log(−h_ab); +inf when infeasible."""
    h = jnp.where(mask, C * squared_distances(psi, psi) - 1.0, -1.0)
    barrier = -0.5 * jnp.sum(jnp.where(mask, jnp.log(jnp.maximum(-h, 1e-300)), 0.0))
    val = 0.5 * jnp.sum(s_bar[:, None] * (psi - psi_f) ** 2) + mu * barrier
    return jnp.where(jnp.all(h < 0), val, jnp.inf)


def max_feasible_step(psi, delta, C, mask):
    """Largest α with h_ab(ψ + α δ) < 0 for all pairs: min over pairs of the
    positive root of C‖Δ + α D‖² − 1 (Δ, D the pair differences of ψ, δ)."""
    diff = psi[:, None, :] - psi[None, :, :]
    dd = delta[:, None, :] - delta[None, :, :]
    a = C * jnp.sum(dd * dd, axis=-1)
    b = 2.0 * C * jnp.sum(diff * dd, axis=-1)
    c = C * jnp.sum(diff * diff, axis=-1) - 1.0          # < 0 at a feasible ψ
    disc = jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))
    denom = b + disc
    root = jnp.where(denom > 0, 2.0 * (-c) / jnp.where(denom > 0, denom, 1.0), jnp.inf)
    return jnp.min(jnp.where(mask, root, jnp.inf))


def barrier_newton(psi, psi_f, s_bar, C, mask, mu, max_newton, n_backtrack=30):
    """Newton's method on the log-barrier problem

        min_ψ  φ_μ(ψ) = ½ Σ_a s̄_a ‖ψ_a − F_a‖²  −  μ Σ_{a<b on the support} log(−h_ab(ψ)),
        h_ab = C_ab ‖ψ_a − ψ_b‖² − 1,

    from a strictly feasible ψ (K, d), with a fraction-to-the-boundary rule (the
    largest feasible step is exact: h is quadratic along the direction) and
    Armijo backtracking, so every iterate is strictly feasible and φ_μ decreases.
    Stops when the step is at the rounding level or the line search finds no
    decrease (or after ``max_newton`` steps). Not on a small Newton decrement
    λ² = −∇φ·δ / μ: in tiles with s̄ ~ 1e-15 the curvature is ~μ, and λ² < 1e-14
    there still allows steps ~1e-7 in ψ, so where the iteration stopped would
    depend on rounding (docs/lipschitz.md). The Hessian is a block Laplacian with (d, d) pair
    weights w I + v ΔΔᵀ plus diag(s̄), assembled densely: (K d)² entries (meant
    for K up to a few hundred).
    """
    K, d = psi.shape
    eye = jnp.eye(d, dtype=psi.dtype)
    maskf = mask.astype(psi.dtype)
    alphas = 0.5 ** jnp.arange(n_backtrack, dtype=psi.dtype)
    phi = lambda p: barrier_value(p, psi_f, s_bar, C, mask, mu)

    step_tol = 100 * jnp.finfo(psi.dtype).eps * (1.0 + jnp.max(jnp.abs(psi_f)))

    def cond(state):
        psi, it, moved = state
        return (it < max_newton) & (moved > step_tol)

    def newton(state):
        psi, it, _ = state
        diff = psi[:, None, :] - psi[None, :, :]                      # Δ_ab, (K, K, d)
        h = jnp.where(mask, C * jnp.sum(diff * diff, axis=-1) - 1.0, -1.0)
        w = 2.0 * mu * C * maskf / (-h)                                # (K, K)
        v = 4.0 * mu * (C * C) * maskf / (h * h)
        grad = s_bar[:, None] * (psi - psi_f) + einsum("ab,abk->ak", w, diff)
        blocks = w[:, :, None, None] * eye + v[:, :, None, None] * (diff[..., :, None] * diff[..., None, :])
        diag = s_bar[:, None, None] * eye + blocks.sum(axis=1)        # (K, d, d)
        H = -blocks + jnp.eye(K, dtype=psi.dtype)[:, :, None, None] * diag[:, None]
        H = H.transpose(0, 2, 1, 3).reshape(K * d, K * d)
        newton_dir = -linalg.solve_spd(H, grad.reshape(-1)).reshape(K, d)
        # Near the boundary H is SPD but its condition number can pass 1/eps
        # (weights ~ μ/h² with h → 0): then the factorisation may break down
        # (non-finite) or give a non-descent direction, depending on rounding.
        # Fall back to the diagonally scaled gradient step, always a descent
        # direction, so the iterate stays finite and strictly feasible.
        diag_h = jnp.maximum(jnp.diagonal(H).reshape(K, d), jnp.finfo(psi.dtype).tiny)
        newton_ok = jnp.all(jnp.isfinite(newton_dir)) & (jnp.sum(grad * newton_dir) < 0)
        delta = jnp.where(newton_ok, newton_dir, -grad / diag_h)
        slope = jnp.sum(grad * delta)                                  # −λ² μ < 0
        a0 = jnp.minimum(1.0, 0.99 * max_feasible_step(psi, delta, C, mask))
        f0 = phi(psi)
        vals = jax.vmap(lambda a: phi(psi + a0 * a * delta))(alphas)
        ok = vals <= f0 + 1e-4 * a0 * alphas * slope
        alpha = jnp.where(jnp.any(ok) & (slope < 0), a0 * alphas[jnp.argmax(ok)], 0.0)
        # Stop once the step is at the rounding level (or the line search failed:
        # rounding at the optimum).
        moved = alpha * jnp.max(jnp.abs(delta))
        accept = (alpha > 0) & jnp.all(jnp.isfinite(delta))
        return jnp.where(accept, psi + alpha * delta, psi), it + 1, jnp.where(accept, moved, 0.0)

    psi, _, _ = jax.lax.while_loop(cond, newton, (psi, jnp.int32(0), jnp.asarray(jnp.inf, psi.dtype)))
    return psi


def barrier_path(psi, psi_f, s_bar, C, mask, mu_hi, mu_lo, max_newton, factor=10.0):
    """The barrier method: :func:`barrier_newton` at μ = μ_hi, μ_hi/10, … down to
    μ_lo, from a strictly feasible ψ. Returns ψ (K, d) and the multipliers
    Ω̃_ab = μ_lo / (−h_ab) (K, K): with them stationarity is exactly the linear
    system of Proposition 6, and Ω̃_ab (−h_ab) = μ_lo (complementary slackness up
    to the barrier weight)."""
    n_stages = jnp.ceil(jnp.log(mu_hi / mu_lo) / jnp.log(factor)).astype(jnp.int32) + 1

    def stage(j, psi):
        # in ψ's dtype: factor**j of an int32 j is float64 whenever x64 is on
        mu = jnp.maximum(mu_hi / factor**j, mu_lo).astype(psi.dtype)
        return barrier_newton(psi, psi_f, s_bar, C, mask, mu, max_newton)

    psi = jax.lax.fori_loop(0, n_stages, stage, psi)
    h = jnp.where(mask, C * squared_distances(psi, psi) - 1.0, -1.0)
    omega = jnp.where(mask, mu_lo / (-h), 0.0)
    return psi, omega


def feasible_start(psi0, C, mask):
    """Shrink ψ0 towards its mean until max h ≤ −0.19 (strictly feasible)."""
    mean = jnp.mean(psi0, axis=0, keepdims=True)
    worst = jnp.max(jnp.where(mask, C * squared_distances(psi0, psi0), 0.0))
    scale = jnp.minimum(1.0, 0.9 / jnp.sqrt(jnp.maximum(worst, 1e-300)))
    return mean + scale * (psi0 - mean)
