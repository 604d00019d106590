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

from vaefp_jax.engine.loop import run, running
from vaefp_jax.engine.problem import Problem
from vaefp_jax.engine.solution import status_of

__all__ = ["run_problems", "solve_core"]


class StepFns(NamedTuple):
    """What the pool schedule needs, per problem: ``start(theta, psi0) -> carry`` (the
    iteration's ``init``), ``step(theta, carry) -> carry``, ``running(theta, carry, t) -> bool``
    (the engine loop's stopping rule, :func:`vaefp_jax.engine.loop.running`) and
    ``finish(theta, carry)``, the problem's report."""

    start: Callable
    step: Callable
    running: Callable
    finish: Callable


def _finish(constraint, iteration, theta, shared, out):
    feasible, cstats = constraint.report(out.psi, out.state.aux, theta, shared)
    stats = {**out.stats, **cstats, **{k: v for k, v in theta.items() if k != "beta"}}
    return dict(psi=out.psi, steps=out.steps, residual=out.residual, trajectory=out.trajectory,
                status=status_of(out.psi, out.residual, iteration.tol, out.stable, feasible), stats=stats)


def run_problems(x, log_prior, shared, theta, psi0, key, *, iteration, step_map, constraint, schedule,
                 record_every: int):
    """Per-problem outputs (dict of (B, …) arrays) of ``iteration`` on every problem."""
    num = theta["beta"].shape[0]
    make = lambda th: Problem(step_map, constraint, x, log_prior, shared, th)

    def start(th, p0):   # the iteration's carry before step 1 (ψ^0 through the constraint's start)
        p0 = constraint.start(p0, th, shared)
        problem = make(th)
        return iteration.init(problem, p0, problem.init_state(p0), key)

    def one(th, p0):
        return _finish(constraint, iteration, th, shared, run(iteration, make(th), start(th, p0), record_every))

    fns = StepFns(start=start, step=lambda th, c: iteration.step(make(th), c),
                  running=lambda th, c, t: running(iteration, make(th), c, t),
                  finish=lambda th, c: _finish(constraint, iteration, th, shared, iteration.postprocess(make(th), c)))
    return schedule.run(one, fns, theta, psi0, num)


@functools.partial(jax.jit, static_argnames=("iteration", "step_map", "constraint", "schedule", "record_every"))
def solve_core(x, log_prior, shared, theta, psi0, key, *, iteration, step_map, constraint, schedule,
               record_every: int = 0):
    return run_problems(x, log_prior, shared, theta, psi0, key, iteration=iteration, step_map=step_map,
                        constraint=constraint, schedule=schedule, record_every=record_every)
