"""The units of work of :class:`~vaefp_jax.Accelerated`, one function each: a plain step of the
problem's step map, a safeguarded Newton step, an extrapolated plain step, the spectral
certificate and the escape from a saddle. The iteration's ``step`` (one phase's unit per step of
the engine's loop) composes them; the reasoning is in :mod:`vaefp_jax.iterations.accelerated`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vaefp_jax import operators

__all__ = ["SPECTRAL_ITERS", "escape", "extrapolated_step", "extrapolation_goes_on", "leading_eig", "map_step",
           "newton_cost", "newton_step", "step_and_free_energy"]


def map_step(problem, psi):
    """F(ψ) by the problem's step map."""
    return problem.evaluate(psi).psi


def step_and_free_energy(problem, psi):
    """(F(ψ), f(ψ)) from one evaluation: the free energy is a by-product of log c_i."""
    value = problem.evaluate(psi)
    return value.psi, value.free_energy(problem.beta)


def newton_step(problem, psi, fpsi, solve, plain_after_reject: int = 4):
    """One safeguarded Newton step from ψ with F(ψ) = ``fpsi``; returns (ψ', F(ψ'), ‖F(ψ') − ψ'‖,
    evaluations, accepted).

    A Newton candidate is accepted only if its free energy is no higher than
    that of a plain step from the same point: plain steps never raise f, so
    neither does the Newton phase, and once a saddle has been escaped below its free
    energy it cannot be reached again.

    ``solve(op, r)`` is the linear solve of the step (:data:`vaefp_jax.operators.NEWTON_SOLVES`) on
    the step map's Jacobian at ψ (:meth:`vaefp_jax.maps.StepMap.jacobian`).
    Cost in map evaluations: the Jacobian (counted as one), F and f at the candidate
    (one: :func:`step_and_free_energy` shares the logits), F and f at the plain step (one).
    F at the accepted point is carried into the next step, so a step costs 3. A rejected
    candidate means the iterate is not yet in the stable point's Newton basin:
    ``plain_after_reject`` plain steps (one evaluation each) follow before Newton is tried
    again; after ``max_rejects`` rejections in a row the phase ends (the stability check and
    an escape, or plain iteration, come next): where n is large a Newton step costs hundreds
    of plain steps (its O(K d n²) capacity matrix), and a point outside the basin rejects
    every candidate."""
    cand = psi + solve(problem.jacobian(psi), fpsi - psi)
    f_cand, e_c = step_and_free_energy(problem, cand)
    f_plain, e_p = step_and_free_energy(problem, fpsi)
    ok = jnp.all(jnp.isfinite(cand)) & jnp.all(jnp.isfinite(f_cand)) & (e_c <= e_p + 1e-13 * jnp.abs(e_p))
    new, f_new = jnp.where(ok, cand, fpsi), jnp.where(ok, f_cand, f_plain)

    def plain(_, pf):
        return pf[1], map_step(problem, pf[1])

    new, f_new = jax.lax.cond(
        ok, lambda pf: pf, lambda pf: jax.lax.fori_loop(0, plain_after_reject, plain, pf), (new, f_new))
    res = jnp.sqrt(jnp.sum((f_new - new) ** 2))
    return new, f_new, res, 3 + jnp.where(ok, 0, plain_after_reject), ok


def newton_cost(num_points: int, num_tiles: int, dim: int, solve: str = "woodbury", factored: bool = True) -> float:
    """The cost of one Newton step in map evaluations (≥ 3, see :func:`_newton_phase`).

    One evaluation is ~(5 d + 10) n K operations (distances, one exponential, the
    weighted sums); the Woodbury solve forms the (n, n) capacity matrix
    (2 n² K d), the K blocks A_b (2 K d² n) and their LU and the capacity LU
    (K d³/3 + n³/3). At the paper's size (n = 120, K = 1024, d = 2) that is ~25
    evaluations; at scikit-learn's digits (n = 1797, K = 144, d = 64) ~750.
    ``solve="krylov"``: :data:`~vaefp_jax.operators.KRYLOV_PRODUCTS` products of
    ~6 n K d operations instead (~125 evaluations at digits' size); "auto" as in
    :func:`~vaefp_jax.operators.newton_solve` (``factored``: whether the map's Jacobian has
    the Woodbury factors).
    ``Accelerated(handoff=h)`` weighs plain steps against h such steps."""
    name = operators.newton_solve_name(solve, num_points, num_tiles, dim, factored)
    cost = operators.solve_costs(num_points, num_tiles, dim)[name]
    return 3.0 + cost / ((5.0 * dim + 10) * num_points * num_tiles)


def extrapolation_goes_on(psi, t, res, ratio, tol, cap, handoff):
    """Whether the extrapolated plain iteration takes another step: fewer than ``cap`` steps,
    the residual ≥ ``tol``, and with ``handoff`` = (warmup, budget) after ``warmup`` steps only
    while the steps still needed at the current rate, log(tol/‖r‖)/log ρ̂, are at most
    ``budget`` (plain steps finish sooner than Newton would)."""
    go = (t < cap) & (res >= tol)
    if handoff is None:
        return go
    warm, budget = handoff
    rate = jnp.clip(ratio, jnp.finfo(psi.dtype).tiny, 1 - jnp.finfo(psi.dtype).eps)
    needed = jnp.log(tol / jnp.maximum(res, jnp.finfo(psi.dtype).tiny)) / jnp.log(rate)
    return go & ((t < warm) | ((ratio < 1) & (needed <= budget)))


def extrapolated_step(problem, psi, state, res, ratio_prev, since, every: int = 8):
    """One plain step with Aitken-type extrapolation of its slowest mode; returns (ψ', the
    problem's state after it, ‖F(ψ) − ψ‖, ratio, steps since the last jump, evaluations).

    F(ψ) comes from the problem's ``update`` with ``state``, so the step map's fast path runs
    here (the dense map's reused shifts and CPU kernel: one pass over the pairs instead of three).

    When the residual ratio ρ̂ = ‖r_t‖/‖r_{t−1}‖ has settled (changed by < 1 %
    over a step) the error is ≈ c ρ̂^t v, and ψ + ρ̂/(1 − ρ̂) (F(ψ) − ψ) removes
    it. The jump follows the iteration's own direction of travel (not a
    Newton root), and is kept only if it lowers the free energy below the
    plain step's."""
    new, state, _ = problem.update(psi, state, 0)
    diff = new - psi
    r = jnp.sqrt(jnp.sum(diff * diff))
    ratio = r / jnp.maximum(res, jnp.finfo(psi.dtype).tiny)
    settled = (since >= every) & (ratio > 0.5) & (ratio < 0.9999) & \
        (jnp.abs(ratio - ratio_prev) < 0.01 * (1 - ratio))
    jump = new + (ratio / (1 - ratio)) * diff
    # the two free energies (a map evaluation each) only when a jump is proposed
    ok = jax.lax.cond(settled, lambda: problem.free_energy(jump) <= problem.free_energy(new),
                      lambda: jnp.bool_(False))
    return jnp.where(ok, jump, new), state, r, ratio, jnp.where(ok, 0, since + 1), 1 + jnp.where(settled, 2, 0)


SPECTRAL_ITERS = {"lanczos": 48, "power": 1000}


def leading_eig(problem, psi, num_iter, key, method, threshold=1.0):
    """(ρ, v) of ∂F/∂ψ at ψ: Lanczos on the symmetrised J (valid at fixed points,
    where the certificate is taken) or power iteration.

    Lanczos's ρ is the top Ritz value widened by its residual bound, an upper bound
    that does not undershoot. Near a transition the top eigenvalues cluster just
    below 1 and 48 steps leave that bound above 1 at a *stable* point (standardised
    diabetes, β = 0.21 λ_max: bound 1.0003–1.0009 by seed, dense λ_max 0.99929,
    resolved to 0.99929 by 96 steps). So where the bound is not below ``threshold``
    the Krylov space is enlarged (2×, then 4× the steps) before the point is called
    unstable; a genuinely unstable point keeps its Ritz value, a lower bound, above 1."""
    factors = problem.jacobian(psi)
    estimate = operators.SPECTRAL[method]
    rho, v = estimate(factors, psi, num_iter, key)
    if method != "lanczos":
        return rho, v
    for grow in (2, 4):
        rho, v = jax.lax.cond(rho >= threshold, lambda: estimate(factors, psi, grow * num_iter, key),
                              lambda: (rho, v))
    return rho, v


def escape(problem, psi, v, scale, num_points):
    """Line search of the free energy along ±v: step sizes scale·2^{-k}."""
    t = scale * 2.0 ** (-jnp.arange(num_points, dtype=psi.dtype))
    t = jnp.concatenate([t, -t])
    f = jax.vmap(lambda s: problem.free_energy(psi + s * v))(t)
    best = jnp.argmin(f)
    return psi + t[best] * v, 2 * num_points
