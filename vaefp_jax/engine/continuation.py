r"""Continuation: the β of a solve visited in order, each from the previous fixed point.

``solve(x, betas, grid, schedule=Continuation("cooling"))`` visits β from the largest to the
smallest ("heating": the reverse); each β starts from the previous β's answer plus uniform
noise of half-width ``kick`` × the data's RMS spread (to break the symmetries that keep
coincident tiles coincident: eq. (15) moves a tile only through its own ψ_b). One branch is
followed: deterministic annealing when cooling. Near a first-order-like transition cooling and
heating disagree over a β range (hysteresis), which is why both exist.

Unlike :class:`~vaefp_jax.Vmapped` and :class:`~vaefp_jax.Pool`, the problems are not
independent, so they are run one after another: one jitted program per β (compiled once, each
β the same shapes), each the engine's own run of one problem (``Vmapped(batch_size=1)``).
Between them the host can report progress: a β near β_c of a large data set takes a minute
on CPU. The outputs come back in the order of ``betas``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate
from vaefp_jax.clusters import rms_spread
from vaefp_jax.engine.core import run_problems
from vaefp_jax.engine.schedules import Schedule, Vmapped

__all__ = ["Continuation", "ORDERS"]

ORDERS = ("cooling", "heating")


@functools.partial(jax.jit, static_argnames=("iteration", "step_map", "constraint"))
def _one_beta(x, log_prior, shared, th, psi, key, kick, *, iteration, step_map, constraint):
    """One β of a continuation: from ``psi`` plus uniform noise of half-width ``kick``.
    Returns (the next key, the problem's outputs)."""
    key, sub = jax.random.split(key)
    start = psi + kick * jax.random.uniform(sub, psi.shape, psi.dtype, -1.0, 1.0)
    one = jax.tree.map(lambda a: a[None], th)
    out = run_problems(x, log_prior, shared, one, start[None], sub, iteration=iteration, step_map=step_map,
                       constraint=constraint, schedule=Vmapped(batch_size=1), record_every=0)
    return key, jax.tree.map(lambda a: a[0], out)


@dataclasses.dataclass(frozen=True)
class Continuation(Schedule):
    """β in ``order`` ("cooling": largest first; "heating": smallest first), each from the
    previous answer plus noise of half-width ``kick`` (relative to the data's RMS spread;
    0: none). Needs one ψ^0 of shape (K, d), the first β's start."""

    order: str = "cooling"
    kick: float = 1e-4

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"continuation must be 'cooling' or 'heating', got {self.order!r}")
        _validate.check_positive("kick", self.kick, allow_zero=True)
        object.__setattr__(self, "kick", float(self.kick))

    def check(self, iteration, record_every: int) -> None:
        if record_every:
            raise ValueError("record_every needs independent solves (continuation=None)")

    def execute(self, setup, psi0, key, record_every: int = 0, progress=None) -> dict:
        """The β in order, one jitted program each; ``progress("sweep", done, B)`` after each."""
        if np.ndim(psi0) != 2:
            raise ValueError("continuation needs one psi0 of shape (K, d)")
        s = setup
        beta = np.asarray(s.theta["beta"], np.float64)
        order = np.argsort(beta)[::-1] if self.order == "cooling" else np.argsort(beta)
        kick = jnp.asarray(self.kick * rms_spread(s.x), s.dtype)
        key = jax.random.fold_in(key, 1)
        psi, outs = jnp.asarray(psi0), []
        for j, idx in enumerate(order):
            th = jax.tree.map(lambda a: a[idx], s.theta)
            key, out = _one_beta(s.x, s.log_prior, s.shared, th, psi, key, kick, iteration=s.iteration,
                                 step_map=s.step_map, constraint=s.constraint.static())
            psi = out["psi"]
            outs.append(out)
            if progress is not None:
                jax.block_until_ready(psi)
                progress("sweep", j + 1, len(order))
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *outs)
        inverse = np.argsort(order)
        out = jax.tree.map(lambda a: a[inverse], stacked)
        out["trajectory"] = None
        return out
