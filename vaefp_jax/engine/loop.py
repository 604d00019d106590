"""The one fixed-point loop: every iteration of the package is a step function driven here.

An iteration (the tile model's :class:`~vaefp_jax.Damped` and :class:`~vaefp_jax.Accelerated`,
the reduced model's :class:`~vaefp_jax.phase.reduced.Squarem`) is an immutable strategy object
with four traceable methods, the protocol of optimistix's ``iterative_solve``:

* ``init(problem, psi0, state0, key) -> carry``: what it carries between steps, a NamedTuple
  with at least ``psi`` (the iterate, any shape) and ``residual`` (a scalar);
* ``step(problem, carry) -> carry``: one step (an iteration in phases, such as Accelerated,
  keeps its phase in the carry and does one phase's unit of work per step);
* ``terminate(problem, carry) -> bool``: its own test: converged, or given up;
* ``postprocess(problem, carry) -> result``: its answer (an :class:`Outcome` for the tile model).

and ``step_limit``, the most steps it may take. This module owns what every iteration used
to write for itself: the step limit, the stop on a non-finite iterate (ψ with a NaN or an
inf, or a NaN residual: the problem ends there and its status says so), the count of steps
and the recording of ψ every ``record_every`` steps. :func:`running` is that stopping rule, so
the pool schedule, which steps many problems in one loop of its own, stops each one by the
same rule.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Loop", "iterate", "run", "running"]


def running(iteration, problem, carry, t) -> jax.Array:
    """Whether the loop goes on after ``t`` steps: below ``iteration.step_limit``, ψ and the
    residual not NaN (nor ψ infinite), and not ``iteration.terminate``."""
    finite = jnp.all(jnp.isfinite(carry.psi)) & ~jnp.isnan(carry.residual)
    return (t < iteration.step_limit) & finite & ~iteration.terminate(problem, carry)


class Loop(NamedTuple):
    """The loop's result: the final ``carry``, the ``steps`` taken (loop steps, int32) and the
    ``trajectory`` (R, *ψ.shape): ψ at steps 0, r, 2r, … (entries past the stop repeat the
    last ψ), or None without recording."""

    carry: object
    steps: jax.Array
    trajectory: jax.Array | None


def iterate(iteration, problem, carry, record_every: int = 0) -> Loop:
    """Run ``iteration`` on ``problem`` from ``carry`` (its ``init``) until :func:`running` says
    stop; with ``record_every`` > 0 also record ψ every that many steps. Traceable (one
    ``lax.while_loop``); the caller applies ``iteration.postprocess``."""
    record_every = int(record_every)
    limit = int(iteration.step_limit)
    psi0 = carry.psi
    n_rec = limit // record_every + 1 if record_every else 0

    def cond(s):
        return running(iteration, problem, s[0], s[1])

    def body(s):
        c, t, traj = s
        c = iteration.step(problem, c)
        t = t + 1
        if record_every:
            traj = jax.lax.cond(t % record_every == 0, lambda tr: tr.at[t // record_every].set(c.psi),
                                lambda tr: tr, traj)
        return c, t, traj

    traj0 = jnp.broadcast_to(psi0, (n_rec,) + psi0.shape) if record_every else None
    carry, t, traj = jax.lax.while_loop(cond, body, (carry, jnp.int32(0), traj0))
    if traj is not None:
        idx = jnp.arange(n_rec).reshape((-1,) + (1,) * psi0.ndim)
        traj = jnp.where(idx > t // record_every, carry.psi[None], traj)
    return Loop(carry=carry, steps=t, trajectory=traj)


def run(iteration, problem, carry, record_every: int = 0):
    """``iteration.postprocess`` of :func:`iterate` from ``carry``: one problem's answer, with
    the recorded trajectory in its ``trajectory`` field when ``record_every`` > 0."""
    out = iterate(iteration, problem, carry, record_every)
    result = iteration.postprocess(problem, out.carry)
    return result._replace(trajectory=out.trajectory) if record_every else result
