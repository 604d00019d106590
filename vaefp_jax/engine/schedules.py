"""Schedules: how the B problems of a solve share the machine (vmapped, pool; sharded in
:mod:`vaefp_jax.engine.sharded`).

* :class:`Vmapped` — ``lax.map`` over chunks of ``batch_size`` problems, each chunk a
  ``vmap`` of the iteration's own loop. A vmapped ``while_loop`` runs until its
  slowest member stops, and a vmapped ``lax.cond`` runs both branches, so
  ``batch_size=1`` (one problem at a time) suits iterations and constraints whose
  stages branch. The only schedule that records trajectories.
* :class:`Pool` — one ``while_loop`` over ``width`` slots, each iterating one
  problem with the iteration's ``step``; a slot whose problem has stopped writes
  it out and starts the next waiting problem in the same step ("continuous
  batching"), so converged problems stop costing work and every step stays wide.

Both give the same fixed points and step counts (tested). :func:`default_schedule`
picks one from the iteration and constraint; :func:`default_batch_size` sizes it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaefp_jax import _validate
from vaefp_jax.engine.core import solve_core

__all__ = ["Schedule", "Vmapped", "Pool", "default_schedule", "default_batch_size", "dense_bytes", "DENSE_COPIES",
           "CPU_CACHE_BYTES"]

DENSE_COPIES = 3  # (n, K) arrays the dense map keeps per β lane (XLA's plans: 2–3; docs/scale.md)
CPU_CACHE_BYTES = 2 * 2**20  # CPU: the per-step working set of all lanes that stays in cache


def dense_bytes(num_points: int, num_tiles: int, itemsize: int = 4, lanes: int = 1) -> int:
    """Estimated bytes of the dense map's (n, K) arrays for ``lanes`` β at once (``DENSE_COPIES`` per lane)."""
    return DENSE_COPIES * int(lanes) * int(num_points) * int(num_tiles) * int(itemsize)


def default_batch_size(num_problems: int, num_points: int | None = None, num_tiles: int | None = None,
                       itemsize: int = 4, *, backend: str | None = None, memory_bytes: int | None = None) -> int:
    """Problems iterated together (Pool slots, Vmapped chunk width); ``num_points`` ×
    ``num_tiles`` is the block of logits one lane's map holds (``StepMap.lane_shape``).

    On CPU, 8, or fewer when ``DENSE_COPIES`` such arrays per lane would not fit in
    ``CPU_CACHE_BYTES``: wide enough for the vector units and both cores while the
    intermediates stay in cache (measured in docs/scale.md). On GPU/TPU all problems
    at once, capped at half the device memory (``memory_bytes``, default the
    device's ``bytes_limit``) for ``DENSE_COPIES`` such arrays per lane.
    """
    backend = backend or jax.default_backend()
    per_lane = dense_bytes(num_points, num_tiles, itemsize) if num_points and num_tiles else 0
    if backend == "cpu":
        lanes = 8 if not per_lane else min(8, CPU_CACHE_BYTES // per_lane)
        return max(1, min(num_problems, lanes))
    lanes = num_problems
    if per_lane:
        if memory_bytes is None:
            stats = jax.devices()[0].memory_stats() or {}
            memory_bytes = stats.get("bytes_limit")
        if memory_bytes:
            lanes = min(lanes, int(0.5 * memory_bytes) // per_lane)
    return max(1, lanes)


def _resolved_width(value, num, lane_shape, itemsize) -> int:
    """A schedule's width: as given or :func:`default_batch_size`, at most ``num``."""
    num_points, num_tiles = lane_shape
    return int(min(value or default_batch_size(num, num_points, num_tiles, itemsize), num))


def _check_width(name, value):
    if value is not None:
        _validate.check_int(name, value)


class Schedule:
    """Base class. ``execute(setup, psi0, key, record_every, progress)`` runs a prepared solve
    (a :class:`~vaefp_jax.engine.solve.Setup`) and returns its per-problem outputs: by default
    one jitted program (:func:`~vaefp_jax.engine.core.solve_core`) in which ``run(one, step_fns,
    theta, psi0, num)`` maps the problems (traceable), after ``resolved(num_problems,
    lane_shape, itemsize)`` has fixed the width. A schedule that works across programs or
    devices overrides ``execute`` (:class:`~vaefp_jax.engine.sharded.Sharded`,
    :class:`~vaefp_jax.engine.continuation.Continuation`)."""

    def check(self, iteration, record_every: int) -> None:
        pass

    def resolved(self, num: int, lane_shape: tuple, itemsize: int) -> "Schedule":
        """This schedule with its width fixed for ``num`` problems (the base: as it is)."""
        return self

    def execute(self, setup, psi0, key, record_every: int = 0, progress=None) -> dict:
        """The outputs (dict of (B, …) arrays) of ``setup`` from ψ^0 ((K, d) or (B, K, d)).
        ``progress(stage, done, total)``: told as work ends, where the schedule can say (this
        one runs one program: it cannot)."""
        s = setup
        return solve_core(s.x, s.log_prior, s.shared, s.theta, psi0, key, iteration=s.iteration,
                          step_map=s.step_map, constraint=s.constraint.static(),
                          schedule=self.resolved(s.num, s.lane_shape, s.itemsize), record_every=int(record_every))


@dataclasses.dataclass(frozen=True)
class Vmapped(Schedule):
    """``lax.map`` over chunks of ``batch_size`` vmapped problems (``None``: :func:`default_batch_size`)."""

    batch_size: int | None = None

    def __post_init__(self):
        _check_width("batch_size", self.batch_size)

    def check(self, iteration, record_every: int) -> None:
        if iteration.branches and self.batch_size != 1:
            raise ValueError(f"{iteration!r} branches per problem (under a vmapped batch every branch would run "
                             "for every lane): use Vmapped(batch_size=1), the default")

    @property
    def width(self) -> int | None:
        """Problems iterated together: ``batch_size`` (the name :class:`Pool` uses too)."""
        return self.batch_size

    def resolved(self, num, lane_shape, itemsize):
        return dataclasses.replace(self, batch_size=_resolved_width(self.batch_size, num, lane_shape, itemsize))

    def run(self, one, step_fns, theta, psi0, num):
        shared = psi0.ndim == 2   # one ψ^0 for all problems: not copied B times
        f = (lambda th: one(th, psi0)) if shared else (lambda a: one(*a))
        xs = theta if shared else (theta, psi0)
        if self.batch_size == 1:   # a vmap, even of one problem, or lax.map(batch_size=1) would turn
            return jax.lax.map(f, xs)   # its conds and switches into selects: every branch at every step
        if self.batch_size >= num:
            return jax.vmap(f)(xs)
        return jax.lax.map(f, xs, batch_size=self.batch_size)


@dataclasses.dataclass(frozen=True)
class Pool(Schedule):
    """``width`` slots refilled as problems stop (``None``: :func:`default_batch_size`)."""

    width: int | None = None

    def __post_init__(self):
        _check_width("width", self.width)

    def check(self, iteration, record_every: int) -> None:
        if iteration.branches:
            raise ValueError(f"{iteration!r} branches per problem (in a pool's vmapped step every branch would "
                             "run for every slot): use Vmapped(batch_size=1), the default")
        if record_every:
            raise ValueError("Pool does not record trajectories: use Vmapped with record_every")

    def resolved(self, num, lane_shape, itemsize):
        """The pool of its width; a pool of one slot is one problem after another, which is
        ``Vmapped(batch_size=1)`` (the same steps and fixed points) without the pool's
        per-step bookkeeping (the slot's stop test, write-out and refill)."""
        width = _resolved_width(self.width, num, lane_shape, itemsize)
        if width == 1:
            return Vmapped(batch_size=1)
        return dataclasses.replace(self, width=width)

    def run(self, one, step_fns, theta, psi0, num):
        B, width = num, self.width
        shared = psi0.ndim == 2
        pick = lambda tree, idx: jax.tree.map(lambda a: a[idx], tree)

        def begin(idx):  # the carry of problem idx before its first step (clipped; empty slots are masked)
            idx = jnp.minimum(idx, B - 1)
            return step_fns.start(pick(theta, idx), psi0 if shared else psi0[idx])

        slot = jnp.arange(width)
        carry = jax.vmap(begin)(slot)
        out = jax.tree.map(lambda a: jnp.zeros((B,) + a.shape[1:], a.dtype), carry)
        init = dict(carry=carry, who=jnp.where(slot < B, slot, -1), t=jnp.zeros(width, jnp.int32),
                    queue=jnp.int32(min(width, B)), out=out)

        def body(s):
            live = s["who"] >= 0
            th = pick(theta, jnp.maximum(s["who"], 0))
            new = jax.vmap(step_fns.step)(th, s["carry"])
            t = s["t"] + 1
            stop = live & ~jax.vmap(step_fns.running)(th, new, t)   # the engine loop's own rule
            dest = jnp.where(stop, s["who"], B)  # B: dropped by the scatter
            put = lambda o, v: o.at[dest].set(v, mode="drop")
            nxt = s["queue"] + jnp.cumsum(stop) - 1  # the problem each stopped slot takes next
            refill = stop & (nxt < B)
            # the next problems' starts only in a step where a slot stops (the loop is not
            # vmapped, so the conditional really branches)
            fresh = jax.lax.cond(jnp.any(refill), lambda: jax.vmap(begin)(nxt), lambda: new)
            keep = lambda f, v: jnp.where(refill.reshape((-1,) + (1,) * (v.ndim - 1)), f, v)
            return dict(carry=jax.tree.map(keep, fresh, new), who=jnp.where(stop, jnp.where(refill, nxt, -1), s["who"]),
                        t=jnp.where(stop, 0, t), queue=s["queue"] + jnp.sum(stop).astype(jnp.int32),
                        out=jax.tree.map(put, s["out"], new))

        s = jax.lax.while_loop(lambda s: jnp.any(s["who"] >= 0), body, init)
        return jax.vmap(step_fns.finish)(theta, s["out"])


def default_schedule(iteration, constraint, record_every: int) -> Schedule:
    """Vmapped one at a time when the iteration or the constraint branches per
    problem; Vmapped when recording trajectories; else Pool."""
    if iteration.branches or constraint.branches:
        return Vmapped(batch_size=1)
    if record_every:
        return Vmapped()
    return Pool()
