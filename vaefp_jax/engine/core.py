"""The traced core of a solve: one problem's run, mapped over the problems by a schedule.

Everything here runs inside ``jit`` (and inside ``shard_map`` for the sharded
schedule). The strategy objects arrive as static arguments; the data, the
per-problem values ``theta`` ((B,) arrays: ``beta`` and the constraint's) and ψ^0
as arrays.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax

from vaefp_jax.engine.problem import Problem
from vaefp_jax.engine.solution import status_of

__all__ = ["run_problems", "solve_core"]


class StepFns(NamedTuple):
    """What the pool schedule needs: per-problem ``start(theta, psi0) -> (psi, state)``,
    ``step(theta, psi, state, t) -> (psi, state, residual)``, ``kept(state)`` (the field of
    a stopped problem's state its report needs: the constraint's), ``report(theta, psi,
    kept, steps, residual)``, and the stopping rule."""

    start: Callable
    step: Callable
    kept: Callable
    report: Callable
    max_steps: int
    tol: float


def _finish(constraint, iteration, theta, shared, psi, aux, steps, residual, trajectory, stable, stats):
    feasible, cstats = constraint.report(psi, aux, theta, shared)
    stats = {**stats, **cstats, **{k: v for k, v in theta.items() if k != "beta"}}
    return dict(psi=psi, steps=steps, residual=residual, trajectory=trajectory,
                status=status_of(psi, residual, iteration.tol, stable, feasible), stats=stats)


def run_problems(x, log_prior, shared, theta, psi0, key, *, iteration, step_map, constraint, schedule,
                 record_every: int):
    """Per-problem outputs (dict of (B, …) arrays) of ``iteration`` on every problem."""
    num = theta["beta"].shape[0]
    make = lambda th: Problem(step_map, constraint, x, log_prior, shared, th)

    def start(th, p0):   # ψ^0 and the ProblemState (constraint's and map's) before step 1
        p0 = constraint.start(p0, th, shared)
        return p0, make(th).init_state(p0)

    def one(th, p0):
        p0, state0 = start(th, p0)
        out = iteration.run(make(th), p0, state0, key, record_every)
        return _finish(constraint, iteration, th, shared, out.psi, out.state.aux, out.steps, out.residual,
                       out.trajectory, out.stable, out.stats)

    def step(th, psi, state, t):
        return iteration.step(make(th), psi, state, t)

    def report(th, psi, aux, steps, residual):
        return _finish(constraint, iteration, th, shared, psi, aux, steps, residual, None, None, {})

    fns = StepFns(start, step, lambda state: state.aux, report, int(iteration.max_steps), iteration.tol)
    return schedule.run(one, fns, theta, psi0, num)


@functools.partial(jax.jit, static_argnames=("iteration", "step_map", "constraint", "schedule", "record_every"))
def solve_core(x, log_prior, shared, theta, psi0, key, *, iteration, step_map, constraint, schedule,
               record_every: int = 0):
    return run_problems(x, log_prior, shared, theta, psi0, key, iteration=iteration, step_map=step_map,
                        constraint=constraint, schedule=schedule, record_every=record_every)
