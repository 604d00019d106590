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
   Jacobian (the step map's, :mod:`vaefp_jax.operators`): the exact Woodbury solve, or for
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
map (dense, blocked, Pallas or a user's); so do the Newton step and the spectral
certificate, through the map's Jacobian operator (:meth:`vaefp_jax.maps.StepMap.jacobian`:
the dense map's closed form, or for any other map products by JVP of its own evaluation,
which never form a (K, n) array). They need the unconstrained map.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vaefp_jax import _validate, operators
from vaefp_jax.constraints.strategies import Unconstrained
from vaefp_jax.iterations.base import Iteration, Outcome, default_tol
from vaefp_jax.iterations.phases import (
    SPECTRAL_ITERS,
    escape,
    extrapolated_step,
    extrapolation_goes_on,
    leading_eig,
    map_step,
    newton_cost,
    newton_step,
)

__all__ = ["Accelerated", "AcceleratedCarry"]

# the phases of one problem (AcceleratedCarry.phase), in the order of lax.switch's branches
_EXTRAPOLATE, _NEWTON_START, _NEWTON, _CERTIFY, _ESCAPE, _KICK, _GIVE_UP = range(7)


class AcceleratedCarry(NamedTuple):
    """One problem's state between steps: ψ (K, d); ``residual`` ‖F(ψ) − ψ‖_F from the last
    Newton phase (inf before the first); the problem's ``state`` (the step map's, from the last
    plain step) and PRNG ``key``; ``fpsi`` F(ψ) (Newton's); ``rho``, ``v`` the last certificate (ρ and its
    eigenvector); the counters ``evals`` (map evaluations), ``newton`` (accepted Newton
    steps), ``escapes``; ``done`` (certified); ``phase`` and ``phase_steps`` (steps in it);
    ``rounds`` (Newton rounds so far) and ``fallback`` (−1 before the fallback, then its
    round); the extrapolation's ``xres``, ``ratio``, ``since``, ``cap`` and ``handoff``;
    Newton's ``rejects`` in a row; ``scale`` the data's RMS spread."""

    psi: jax.Array
    residual: jax.Array
    state: object
    key: jax.Array
    fpsi: jax.Array
    rho: jax.Array
    v: jax.Array
    evals: jax.Array
    newton: jax.Array
    escapes: jax.Array
    done: jax.Array
    phase: jax.Array
    phase_steps: jax.Array
    rounds: jax.Array
    fallback: jax.Array
    xres: jax.Array
    ratio: jax.Array
    since: jax.Array
    rejects: jax.Array
    cap: jax.Array
    handoff: jax.Array
    scale: jax.Array


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
      newton_solve: the linear solve of a Newton step: "woodbury" (exact; the dense map's),
        "krylov" (GMRES on products J·v, inexact), "dense" (J from K d products, LU) or
        "auto" (the cheaper of the first two at the problem's size,
        :func:`vaefp_jax.operators.prefers_krylov`: Krylov for n above ~450, and always
        for a map without factors);
      max_rejects: rejected Newton candidates in a row that end a round;
      rounds: saddle escapes allowed;
      spectral: how ρ(∂F/∂ψ) and its eigenvector are estimated: "lanczos" (on the
        symmetrised Jacobian, exact at a fixed point, see
        :func:`vaefp_jax.operators.lanczos`) or "power" (no symmetry assumed);
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

    branches = True   # its phases branch (lax.switch) per problem

    def __post_init__(self):
        for name in ("tol", "margin", "init_noise", "handoff", "kick"):   # plain numbers: the object is a jit key
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if self.tol is not None:
            _validate.check_positive("tol", self.tol)
        operators.spectral_estimate(self.spectral)
        operators.check_newton_solve(self.newton_solve)
        if self.spectral_iters is not None:
            _validate.check_int("spectral_iters", self.spectral_iters, 2)
        for name in ("warmup", "max_newton", "max_rejects", "rounds", "line_points", "fallback_steps",
                     "fallback_rounds"):
            _validate.check_int(name, getattr(self, name), 0)
        _validate.check_positive("margin", self.margin, allow_zero=True)
        _validate.check_positive("handoff", self.handoff, allow_zero=True)
        _validate.check_positive("kick", self.kick, allow_zero=True)

    @property
    def max_steps(self) -> int:
        """An upper bound of the plain steps (warm-ups, the first one's hand-off of at most
        ``fallback_steps``, and the fallback rounds)."""
        return (self.rounds + 1) * self.warmup + (1 + self.fallback_rounds) * self.fallback_steps

    @property
    def step_limit(self) -> int:
        """A bound of the engine loop's steps (never reached: every phase has its own limit): each
        phase's steps plus one step per phase change."""
        per_round = 1 + (self.max_newton + 1) + 1 + 1 + (self.warmup + 1)
        per_fallback = 1 + (self.fallback_steps + 1) + 1 + (self.max_newton + 1) + 1
        return ((self.warmup + self.fallback_steps + 1) + (self.rounds + 1) * per_round
                + self.fallback_rounds * per_fallback + 8)

    def resolved(self, dtype) -> "Accelerated":
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))

    def check(self, step_map, constraint) -> None:
        if not isinstance(constraint, Unconstrained):
            raise ValueError(f"Accelerated needs the unconstrained map (its Newton step and stability "
                             f"certificate use the factored Jacobian of eq. 15), got {constraint!r}; "
                             "use Damped with a constraint")
        operators.check_newton_solve(self.newton_solve, step_map.factored)

    def _plan(self, problem, psi):
        """Static pieces of a problem: the Newton solve, the hand-off budget and the first
        extrapolation's cap."""
        (K, d), n = psi.shape, problem.x.shape[0]
        factored = problem.step_map.factored
        solve = operators.newton_solve(self.newton_solve, n, K, d, factored)
        budget = self.handoff * newton_cost(n, K, d, self.newton_solve, factored)
        return solve, budget, self.warmup + int(min(budget, self.fallback_steps))

    def init(self, problem, psi0, state0, key) -> AcceleratedCarry:
        """The first phase: extrapolated plain steps (``warmup``, then on while the hand-off
        allows)."""
        dtype = psi0.dtype
        i32, zero = jnp.int32(0), jnp.asarray(0.0, dtype)
        _, _, cap = self._plan(problem, psi0)
        return AcceleratedCarry(
            psi=psi0, residual=jnp.asarray(jnp.inf, dtype), state=state0,
            key=jax.random.PRNGKey(0) if key is None else key, fpsi=psi0,
            rho=jnp.asarray(jnp.nan, dtype), v=jnp.zeros_like(psi0), evals=i32, newton=i32, escapes=i32,
            done=jnp.bool_(False), phase=jnp.int32(_EXTRAPOLATE), phase_steps=i32, rounds=i32, fallback=jnp.int32(-1),
            xres=jnp.asarray(jnp.inf, dtype), ratio=zero, since=i32, rejects=i32, cap=jnp.int32(cap),
            handoff=jnp.bool_(True), scale=jnp.sqrt(jnp.sum(jnp.var(problem.x, axis=0))))

    def step(self, problem, c: AcceleratedCarry) -> AcceleratedCarry:
        """One unit of the current phase (module docstring), or the move to the next phase."""
        tol, margin = self.tol, self.margin
        iters = self.spectral_iters or SPECTRAL_ITERS[self.spectral]
        solve, budget, _ = self._plan(problem, c.psi)

        def extrapolate(c):
            def go(c):
                psi, state, res, ratio, since, e = extrapolated_step(problem, c.psi, c.state, c.xres, c.ratio,
                                                                     c.since)
                return c._replace(psi=psi, state=state, xres=res, ratio=ratio, since=since, evals=c.evals + e,
                                  phase_steps=c.phase_steps + 1)

            args = (c.psi, c.phase_steps, c.xres, c.ratio, tol, c.cap)
            more = jnp.where(c.handoff, extrapolation_goes_on(*args, (self.warmup, budget)),
                             extrapolation_goes_on(*args, None))
            return jax.lax.cond(more, go, lambda c: c._replace(phase=jnp.int32(_NEWTON_START)), c)

        def newton_start(c):
            fpsi = map_step(problem, c.psi)
            return c._replace(fpsi=fpsi, residual=jnp.sqrt(jnp.sum((fpsi - c.psi) ** 2)), evals=c.evals + 1,
                              phase_steps=jnp.int32(0), rejects=jnp.int32(0), phase=jnp.int32(_NEWTON))

        def newton(c):
            def go(c):
                psi, fpsi, res, e, ok = newton_step(problem, c.psi, c.fpsi, solve)
                return c._replace(psi=psi, fpsi=fpsi, residual=res, evals=c.evals + e,
                                  newton=c.newton + ok.astype(jnp.int32), phase_steps=c.phase_steps + 1,
                                  rejects=jnp.where(ok, 0, c.rejects + 1))

            more = (c.phase_steps < self.max_newton) & (c.residual >= tol) & (c.rejects < self.max_rejects)
            return jax.lax.cond(more, go, lambda c: c._replace(phase=jnp.int32(_CERTIFY)), c)

        def certify(c):
            in_rounds = c.fallback < 0
            fold = jnp.where(in_rounds, c.rounds, self.rounds + 1 + c.fallback)
            rho, v = leading_eig(problem, c.psi, iters, jax.random.fold_in(c.key, fold), self.spectral, 1.0 - margin)
            done = (rho < 1.0 - margin) & (c.residual < tol)
            unstable = ~done & (rho >= 1.0 - margin)
            # rounds: an escape from a saddle (while escapes remain), else Newton again, then the
            # fallback; fallback: the next fallback round, else give up
            nxt_round = c.rounds + 1
            phase_r = jnp.where(unstable & (c.rounds < self.rounds), _ESCAPE,
                                jnp.where(nxt_round <= self.rounds, _NEWTON_START,
                                          jnp.where(self.fallback_rounds > 0, _KICK, _GIVE_UP)))
            nxt_fb = jnp.where(in_rounds, jnp.where(phase_r == _KICK, 0, -1), c.fallback + 1)
            phase_f = jnp.where(nxt_fb < self.fallback_rounds, _KICK, _GIVE_UP)
            phase = jnp.where(done, _GIVE_UP, jnp.where(in_rounds, phase_r, phase_f))
            return c._replace(rho=rho, v=v, done=done, phase=phase.astype(jnp.int32),
                              rounds=jnp.where(in_rounds, nxt_round, c.rounds).astype(jnp.int32),
                              fallback=nxt_fb.astype(jnp.int32))

        def extrapolate_from(c, psi, cap):
            return c._replace(psi=psi, phase=jnp.int32(_EXTRAPOLATE), phase_steps=jnp.int32(0), cap=jnp.int32(cap),
                              handoff=jnp.bool_(False), xres=jnp.asarray(jnp.inf, c.psi.dtype),
                              ratio=jnp.zeros_like(c.ratio), since=jnp.int32(0))

        def escape_saddle(c):
            # only from an unstable point; a stable one that Newton has not finished is
            # polished again in the next round
            psi, e = escape(problem, c.psi, c.v, c.scale, self.line_points)
            return extrapolate_from(c._replace(evals=c.evals + e, escapes=c.escapes + 1), psi, self.warmup)

        def fallback_kick(c):
            # a fallback round, from an unstable point along v first; then noise on every tile
            # (module docstring), plain steps (they converge only to stable points), Newton, the certificate
            unstable = ~(c.rho < 1.0 - margin)
            psi, e = jax.lax.cond(unstable, lambda p: escape(problem, p, c.v, c.scale, self.line_points),
                                  lambda p: (p, 0), c.psi)
            noise = jax.random.uniform(jax.random.fold_in(c.key, 1000 + c.fallback), psi.shape, psi.dtype, -1.0, 1.0)
            c = c._replace(evals=c.evals + e, escapes=c.escapes + unstable.astype(jnp.int32))
            return extrapolate_from(c, psi + (self.kick * c.scale) * noise, self.fallback_steps)

        return jax.lax.switch(c.phase, [extrapolate, newton_start, newton, certify, escape_saddle, fallback_kick,
                                        lambda c: c], c)

    def terminate(self, problem, c: AcceleratedCarry) -> jax.Array:
        return c.done | (c.phase == _GIVE_UP)

    def postprocess(self, problem, c: AcceleratedCarry) -> Outcome:
        return Outcome(psi=c.psi, state=c.state, steps=c.evals, residual=c.residual, trajectory=None,
                       stable=c.rho < 1.0 - self.margin,
                       stats={"newton_steps": c.newton, "escapes": c.escapes, "spectral_radius": c.rho})

    def __repr__(self):
        return f"Accelerated(tol={self.tol}, spectral={self.spectral!r}, newton_solve={self.newton_solve!r})"
