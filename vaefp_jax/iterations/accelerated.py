r"""The accelerated iteration: reaches the *stable* fixed point near a transition, fast.

Near a phase transition the contraction factor ρ of the map F tends to 1 and
plain iteration needs thousands of steps. Generic accelerators fail here in a
specific way: Newton's method converges to the nearest root of ψ − F(ψ), which
near β_c is often the *unstable* merged configuration (the collapsed point
ψ_a = mean is a fixed point at every β), erasing the transition.

What makes a stable fixed point: the map is preconditioned gradient descent on
the free energy f(ψ) = −(β/n) Σ_i log c_i(ψ),

    F(ψ)_a − ψ_a = −(n / s_a) ∂f/∂ψ_a,     s_a = Σ_i q_ia,

so I − ∂F/∂ψ = diag(n/s) ∇²f at a fixed point: stable fixed points (ρ < 1) are
the local minima of f, unstable ones its saddles. The solver here:

1. ``warmup`` plain steps (the fast modes contract), with Aitken-type
   extrapolation of the slowest mode once its rate has settled;
2. safeguarded Newton: ψ ← ψ + (I − J)⁻¹ (F(ψ) − ψ) with the structured
   Jacobian (:mod:`vaefp_jax.tile_jacobian`): the exact Woodbury solve, or for
   large n (where its (n, n) capacity matrix costs hundreds of map evaluations)
   matrix-free GMRES to a relative residual of 1e-6 (an inexact Newton step);
   accepted only when it lowers the free energy below a plain step's, else plain steps;
3. a stability check: ρ(J) and its leading eigenvector v, by Lanczos on the
   symmetrised Jacobian (at a fixed point J = I − D ∇²f is similar to a
   symmetric matrix: 48 products J·v certify ρ to ~1e-12 where 1000 power
   iterations reached ~1e-8), or by power iteration.
   At a saddle (ρ > 1) we descend: a line search of f along ±v (step sizes
   halving from the data's spread) moves into the basin of the lower minimum,
   and we go back to 2. Up to ``rounds`` escapes;
4. a β still not certified falls back to (extrapolated) plain iteration, which
   converges only to stable points, and is checked again: up to ``fallback_rounds``
   times, from the point escaped along v with uniform noise of half-width
   ``kick`` × the data's spread added to every tile, then polished by Newton.
   The noise is what makes the fallback reach a stable point: eq. (15) depends
   on a tile only through its ψ_b, so coincident tiles stay coincident under F
   *exactly*, and a group of coincident tiles past its own splitting point (a
   saddle of f along a direction that separates them) is a fixed point that
   plain iteration keeps forever. Cooling across several transitions in one β
   step leaves several such groups, and each round of 3 escapes one direction
   only. With every tile moved, each unstable direction has a component that
   plain iteration multiplies by ρ_w > 1 per step until its group has split,
   while the stable directions contract; Newton then finishes quickly.

A β whose residual is above ``tol`` ends with status MAX_STEPS; one whose
answer is not certified stable (ρ < 1 − margin), UNSTABLE. Map evaluations are counted: one per
plain step, three per Newton step (the Jacobian factors, which cost about one
evaluation, and F with the free energy at the candidate and at the plain step,
one each), two per extrapolation test, one per line-search point; a Lanczos
or power step is *not* counted as a map evaluation (a structured J·v costs
O(K n d) multiply-adds and no exponential, far less).

The plain steps, the free energies and the extrapolation use the problem's step
map (dense, blocked or Pallas); the Newton step and the spectral certificate use
the map's Jacobian in factored form (:mod:`vaefp_jax.tile_jacobian`, (K, n, d)
arrays), which exists for the unconstrained map only.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaefp_jax import _validate, tile_jacobian
from vaefp_jax.constraints.strategies import Unconstrained
from vaefp_jax.iterations.base import Iteration, Outcome, default_tol

__all__ = ["Accelerated"]


def _step(problem, psi):
    return problem.evaluate(psi).psi


def _step_and_free_energy(problem, psi):
    """(F(ψ), f(ψ)) from one evaluation: the free energy is a by-product of log c_i."""
    value = problem.evaluate(psi)
    return value.psi, value.free_energy(problem.beta)


def _newton_phase(problem, psi, tol, max_newton, max_rejects, solve, plain_after_reject: int = 4):
    """Safeguarded Newton; returns (psi, residual, evaluations, accepted).

    A Newton candidate is accepted only if its free energy is no higher than
    that of a plain step from the same point: plain steps never raise f, so
    neither does this loop, and once a saddle has been escaped below its free
    energy it cannot be reached again.

    ``solve(factors, r)`` is the linear solve of the step (:data:`vaefp_jax.tile_jacobian.NEWTON_SOLVES`).
    Cost per step, in map evaluations: the Jacobian factors (counted as one),
    F and f at the candidate (one: :func:`_step_and_free_energy` shares the
    logits), F and f at the plain step (one). F at the accepted point is carried
    into the next step, so a step costs 3. A rejected candidate means the
    iterate is not yet in the stable point's Newton basin: ``plain_after_reject``
    plain steps (one evaluation each) follow before Newton is tried again; after
    ``max_rejects`` rejections in a row the phase ends (the stability check and an
    escape, or plain iteration, come next): where n is large a Newton step costs
    hundreds of plain steps (its O(K d n²) capacity matrix), and a point outside
    the basin rejects every candidate."""

    def cond(s):
        psi, fpsi, res, k, evals, acc, rejects = s
        return (k < max_newton) & (res >= tol) & (rejects < max_rejects)

    def body(s):
        psi, fpsi, res, k, evals, acc, rejects = s
        f = tile_jacobian.jacobian_factors(psi, problem.x, problem.beta, problem.log_prior)
        cand = psi + solve(f, fpsi - psi)
        f_cand, e_c = _step_and_free_energy(problem, cand)
        f_plain, e_p = _step_and_free_energy(problem, fpsi)
        ok = jnp.all(jnp.isfinite(cand)) & jnp.all(jnp.isfinite(f_cand)) & (e_c <= e_p + 1e-13 * jnp.abs(e_p))
        new, f_new = jnp.where(ok, cand, fpsi), jnp.where(ok, f_cand, f_plain)

        def plain(_, pf):
            return pf[1], _step(problem, pf[1])

        new, f_new = jax.lax.cond(
            ok, lambda pf: pf, lambda pf: jax.lax.fori_loop(0, plain_after_reject, plain, pf), (new, f_new))
        res = jnp.sqrt(jnp.sum((f_new - new) ** 2))
        extra = jnp.where(ok, 0, plain_after_reject)
        return (new, f_new, res, k + 1, evals + 3 + extra, acc + ok.astype(jnp.int32),
                jnp.where(ok, 0, rejects + 1))

    fpsi0 = _step(problem, psi)
    res0 = jnp.sqrt(jnp.sum((fpsi0 - psi) ** 2))
    psi, _, res, k, evals, acc, _ = jax.lax.while_loop(
        cond, body, (psi, fpsi0, res0, jnp.int32(0), jnp.int32(1), jnp.int32(0), jnp.int32(0)))
    return psi, res, evals, acc


def newton_cost(num_points: int, num_tiles: int, dim: int, solve: str = "woodbury") -> float:
    """The cost of one Newton step in map evaluations (≥ 3, see :func:`_newton_phase`).

    One evaluation is ~(5 d + 10) n K operations (distances, one exponential, the
    weighted sums); the Woodbury solve forms the (n, n) capacity matrix
    (2 n² K d), the K blocks A_b (2 K d² n) and their LU and the capacity LU
    (K d³/3 + n³/3). At the paper's size (n = 120, K = 1024, d = 2) that is ~25
    evaluations; at scikit-learn's digits (n = 1797, K = 144, d = 64) ~750.
    ``solve="krylov"``: :data:`~vaefp_jax.tile_jacobian.KRYLOV_PRODUCTS` products of
    ~6 n K d operations instead (~125 evaluations at digits' size); "auto" as in
    :func:`~vaefp_jax.tile_jacobian.newton_solve`.
    ``Accelerated(handoff=h)`` weighs plain steps against h such steps."""
    name = tile_jacobian.newton_solve_name(solve, num_points, num_tiles, dim)
    cost = tile_jacobian.solve_costs(num_points, num_tiles, dim)[name]
    return 3.0 + cost / ((5.0 * dim + 10) * num_points * num_tiles)


def _extrapolated_iterate(problem, psi, tol, max_steps, every: int = 8, handoff=None):
    """Plain iteration with Aitken-type extrapolation of its slowest mode.

    When the residual ratio ρ̂ = ‖r_t‖/‖r_{t−1}‖ has settled (changed by < 1 %
    over a step) the error is ≈ c ρ̂^t v, and ψ + ρ̂/(1 − ρ̂) (F(ψ) − ψ) removes
    it. The jump follows the iteration's own direction of travel (not a
    Newton root), and is kept only if it lowers the free energy below the
    plain step's. Returns (psi, evaluations, residual).

    ``handoff`` = (warmup, budget): after ``warmup`` steps, go on only while the
    steps still needed at the current rate, log(tol/‖r‖)/log ρ̂, are at most
    ``budget`` (plain steps finish sooner than Newton would); None: run to ``max_steps``."""

    def cond(s):
        psi, t, res, ratio, since, evals = s
        go = (t < max_steps) & (res >= tol)
        if handoff is None:
            return go
        warm, budget = handoff
        rate = jnp.clip(ratio, jnp.finfo(psi.dtype).tiny, 1 - jnp.finfo(psi.dtype).eps)
        needed = jnp.log(tol / jnp.maximum(res, jnp.finfo(psi.dtype).tiny)) / jnp.log(rate)
        return go & ((t < warm) | ((ratio < 1) & (needed <= budget)))

    def body(s):
        psi, t, res, ratio_prev, since, evals = s
        new = _step(problem, psi)
        diff = new - psi
        r = jnp.sqrt(jnp.sum(diff * diff))
        ratio = r / jnp.maximum(res, jnp.finfo(psi.dtype).tiny)
        settled = (since >= every) & (ratio > 0.5) & (ratio < 0.9999) & \
            (jnp.abs(ratio - ratio_prev) < 0.01 * (1 - ratio))
        jump = new + (ratio / (1 - ratio)) * diff
        # the two free energies (a map evaluation each) only when a jump is proposed
        ok = jax.lax.cond(settled, lambda: problem.free_energy(jump) <= problem.free_energy(new),
                          lambda: jnp.bool_(False))
        out = jnp.where(ok, jump, new)
        return (out, t + 1, r, ratio, jnp.where(ok, 0, since + 1),
                evals + 1 + jnp.where(settled, 2, 0))

    init = (psi, jnp.int32(0), jnp.asarray(jnp.inf, psi.dtype), jnp.asarray(0.0, psi.dtype),
            jnp.int32(0), jnp.int32(0))
    psi, t, res, _, _, evals = jax.lax.while_loop(cond, body, init)
    return psi, evals, res


_SPECTRAL_ITERS = {"lanczos": 48, "power": 1000}


def _leading_eig(problem, psi, num_iter, key, method, threshold=1.0):
    """(ρ, v) of ∂F/∂ψ at ψ: Lanczos on the symmetrised J (valid at fixed points,
    where the certificate is taken) or power iteration.

    Lanczos's ρ is the top Ritz value widened by its residual bound, an upper bound
    that does not undershoot. Near a transition the top eigenvalues cluster just
    below 1 and 48 steps leave that bound above 1 at a *stable* point (standardised
    diabetes, β = 0.21 λ_max: bound 1.0003–1.0009 by seed, dense λ_max 0.99929,
    resolved to 0.99929 by 96 steps). So where the bound is not below ``threshold``
    the Krylov space is enlarged (2×, then 4× the steps) before the point is called
    unstable; a genuinely unstable point keeps its Ritz value, a lower bound, above 1."""
    factors = tile_jacobian.jacobian_factors(psi, problem.x, problem.beta, problem.log_prior)
    estimate = tile_jacobian.SPECTRAL[method]
    rho, v = estimate(factors, psi, num_iter, key)
    if method != "lanczos":
        return rho, v
    for grow in (2, 4):
        rho, v = jax.lax.cond(rho >= threshold, lambda: estimate(factors, psi, grow * num_iter, key),
                              lambda: (rho, v))
    return rho, v


def _escape(problem, psi, v, scale, num_points):
    """Line search of the free energy along ±v: step sizes scale·2^{-k}."""
    t = scale * 2.0 ** (-jnp.arange(num_points, dtype=psi.dtype))
    t = jnp.concatenate([t, -t])
    f = jax.vmap(lambda s: problem.free_energy(psi + s * v))(t)
    best = jnp.argmin(f)
    return psi + t[best] * v, 2 * num_points


@dataclasses.dataclass(frozen=True)
class Accelerated(Iteration):
    """Stable fixed points with far fewer map evaluations than plain iteration near
    a transition (see the module docstring).

    Attributes:
      tol: on ‖F(ψ) − ψ‖_F (``None``: 1e-10 in float64, 1e-5 in float32).
      warmup: plain steps before Newton (and after each escape);
      handoff: if > 0, after the first warm-up plain steps go on while they are predicted
        to converge within ``handoff`` Newton steps' worth of map evaluations
        (:func:`newton_cost`). Off by default: with 3 it left 2 of 48 β of standardised
        wine unconverged that the default converges (benchmarks/RESULTS.md);
      max_newton: Newton steps per round;
      newton_solve: the linear solve of a Newton step: "woodbury" (exact), "krylov"
        (GMRES on products J·v, inexact) or "auto" (the cheaper at the problem's size,
        :func:`vaefp_jax.tile_jacobian.prefers_krylov`: Krylov for n above ~450);
      max_rejects: rejected Newton candidates in a row that end a round;
      rounds: saddle escapes allowed;
      spectral: how ρ(∂F/∂ψ) and its eigenvector are estimated: "lanczos" (on the
        symmetrised Jacobian, exact at a fixed point, see
        :func:`vaefp_jax.tile_jacobian.lanczos`) or "power" (no symmetry assumed);
      spectral_iters: their steps (``None``: 48 / 1000);
      margin: stable means ρ < 1 − margin; line_points: step sizes per escape direction;
      fallback_steps: extrapolated plain steps (per fallback round) for a β Newton could not certify;
      fallback_rounds: fallback rounds (escape, noise, plain steps, Newton, certificate) at most;
      kick: half-width of the fallback's noise on every tile, relative to the data's RMS spread
        (large enough that a weakly unstable direction's residual, (ρ − 1) × kick × spread,
        stays above ``tol`` until it has grown; small against a cluster);
      init_noise: half-width of the noise of the default ψ^0.
    """

    tol: float | None = None
    warmup: int = 50
    handoff: float = 0.0
    max_newton: int = 30
    newton_solve: str = "auto"
    max_rejects: int = 3
    rounds: int = 8
    spectral: str = "lanczos"
    spectral_iters: int | None = None
    margin: float = 0.0
    line_points: int = 16
    fallback_steps: int = 20_000
    fallback_rounds: int = 3
    kick: float = 1e-3
    init_noise: float = 0.1

    prefers_sequential = True   # its stages branch (lax.cond) per problem

    def __post_init__(self):
        for name in ("tol", "margin", "init_noise", "handoff", "kick"):   # plain numbers: the object is a jit key
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if self.tol is not None:
            _validate.check_positive("tol", self.tol)
        tile_jacobian.spectral_estimate(self.spectral)
        tile_jacobian.check_newton_solve(self.newton_solve)
        if self.spectral_iters is not None and (isinstance(self.spectral_iters, bool)
                                                or int(self.spectral_iters) != self.spectral_iters
                                                or self.spectral_iters < 2):
            raise ValueError(f"spectral_iters must be an integer ≥ 2, got {self.spectral_iters!r}")
        for name in ("warmup", "max_newton", "max_rejects", "rounds", "line_points", "fallback_steps",
                     "fallback_rounds"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"{name} must be an integer ≥ 0, got {v!r}")
        _validate.check_positive("margin", self.margin, allow_zero=True)
        _validate.check_positive("handoff", self.handoff, allow_zero=True)
        _validate.check_positive("kick", self.kick, allow_zero=True)

    @property
    def max_steps(self) -> int:
        """An upper bound of the plain steps (warm-ups, the first one's hand-off of at most
        ``fallback_steps``, and the fallback rounds)."""
        return (self.rounds + 1) * self.warmup + (1 + self.fallback_rounds) * self.fallback_steps

    def resolved(self, dtype) -> "Accelerated":
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))

    def check(self, step_map, constraint) -> None:
        if not isinstance(constraint, Unconstrained):
            raise ValueError(f"Accelerated needs the unconstrained map (its Newton step and stability "
                             f"certificate use the factored Jacobian of eq. 15), got {constraint!r}; "
                             "use Damped with a constraint")

    def run(self, problem, psi0, state0, key, record_every: int) -> Outcome:
        """One β. Each stage sits in a ``lax.cond`` on "not done yet", so a β that is
        certified early pays for nothing more (mapped over β one at a time, the
        conditionals really branch)."""
        if record_every:
            raise ValueError("Accelerated does not record trajectories (record_every=0)")
        tol, margin = self.tol, self.margin
        iters = self.spectral_iters or _SPECTRAL_ITERS[self.spectral]
        scale = jnp.sqrt(jnp.sum(jnp.var(problem.x, axis=0)))   # the data's RMS spread
        (K, d), n = psi0.shape, problem.x.shape[0]
        solve = tile_jacobian.newton_solve(self.newton_solve, n, K, d)
        budget = self.handoff * newton_cost(n, K, d, self.newton_solve)
        cap = self.warmup + int(min(budget, self.fallback_steps))
        psi, evals, _ = _extrapolated_iterate(problem, psi0, tol, cap, handoff=(self.warmup, budget))
        # state: psi, res, rho, v, evals, newton, escapes, done
        state = (psi, jnp.asarray(jnp.inf, psi.dtype), jnp.asarray(jnp.nan, psi.dtype), jnp.zeros_like(psi),
                 evals, jnp.int32(0), jnp.int32(0), jnp.bool_(False))

        def newton_round(r):
            def run(st):
                psi, _, _, _, evals, newton, escapes, _ = st
                p, res, e, acc = _newton_phase(problem, psi, tol, self.max_newton, self.max_rejects, solve)
                rho, v = _leading_eig(problem, p, iters, jax.random.fold_in(key, r), self.spectral, 1.0 - margin)
                done = (rho < 1.0 - margin) & (res < tol)
                return p, res, rho, v, evals + e, newton + acc, escapes, done
            return run

        def escape_round(st):
            # only from an unstable point; a stable one that Newton has not
            # finished is polished again in the next round
            psi, res, rho, v, evals, newton, escapes, done = st
            esc, e_esc = _escape(problem, psi, v, scale, self.line_points)
            esc, steps, _ = _extrapolated_iterate(problem, esc, tol, self.warmup)
            return esc, res, rho, v, evals + e_esc + steps, newton, escapes + 1, done

        def one_round(carry):
            r, st = carry
            st = newton_round(r)(st)
            unstable = ~st[7] & (st[2] >= 1.0 - margin) & (r < self.rounds)
            return r + 1, jax.lax.cond(unstable, escape_round, lambda s: s, st)

        # rounds of Newton (+ an escape from a saddle) until certified, at most rounds + 1
        _, state = jax.lax.while_loop(lambda c: (c[0] <= self.rounds) & ~c[1][7], one_round, (jnp.int32(0), state))

        def fallback_round(carry):
            # from an unstable point: along v first; then noise on every tile (see the module
            # docstring), plain steps (they converge only to stable points), Newton, the certificate
            f, st = carry
            psi, _, rho, v, evals, newton, escapes, _ = st
            unstable = ~(rho < 1.0 - margin)
            psi, e_esc = jax.lax.cond(unstable, lambda p: _escape(problem, p, v, scale, self.line_points),
                                      lambda p: (p, 0), psi)
            evals, escapes = evals + e_esc, escapes + unstable.astype(escapes.dtype)
            noise = jax.random.uniform(jax.random.fold_in(key, 1000 + f), psi.shape, psi.dtype, -1.0, 1.0)
            psi = psi + (self.kick * scale) * noise
            p, e, res = _extrapolated_iterate(problem, psi, tol, self.fallback_steps)
            p, res, e_n, acc = _newton_phase(problem, p, tol, self.max_newton, self.max_rejects, solve)
            rho, v = _leading_eig(problem, p, iters, jax.random.fold_in(key, self.rounds + 1 + f), self.spectral,
                                  1.0 - margin)
            return f + 1, (p, res, rho, v, evals + e + e_n, newton + acc, escapes, (rho < 1.0 - margin) & (res < tol))

        _, state = jax.lax.while_loop(lambda c: (c[0] < self.fallback_rounds) & ~c[1][7], fallback_round,
                                      (jnp.int32(0), state))
        psi, res, rho, _, evals, newton, escapes, _ = state
        return Outcome(psi=psi, state=state0, steps=evals, residual=res, trajectory=None, stable=rho < 1.0 - margin,
                       stats={"newton_steps": newton, "escapes": escapes, "spectral_radius": rho})

    def __repr__(self):
        return f"Accelerated(tol={self.tol}, spectral={self.spectral!r}, newton_solve={self.newton_solve!r})"
