"""What an iteration is: the strategy that drives one fixed-point problem to its answer.

An iteration is an immutable, hashable object holding its own tolerances, with

* ``resolved(dtype)``: a copy whose ``tol`` is a number (``None`` means: by dtype);
* ``check(step_map, constraint)``: raises ``ValueError`` for a combination it cannot do;
* ``run(problem, psi0, state0, key, record_every) -> Outcome``: one problem, traceable;
* optionally ``step(problem, psi, state, t) -> (psi, state, residual)``: one step, which
  the pool schedule needs (it refills a slot as soon as its problem stops).

``state`` is the problem's :class:`~vaefp_jax.engine.problem.ProblemState` (the
constraint's and the step map's), which ``problem.update`` advances; an iteration
passes it along unopened.

The engine (:func:`vaefp_jax.solve`) turns the :class:`Outcome` into a
:class:`~vaefp_jax.Solution` status, the same way for every iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Iteration", "Outcome", "default_tol"]


def default_tol(dtype) -> float:
    """1e-10 in float64, 1e-5 in float32: a few hundred ulps of an O(1) ψ."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


class Outcome(NamedTuple):
    """One problem's result: ``psi`` (K, d), the final ``state`` (ProblemState), ``steps`` (map
    evaluations), ``residual``, ``trajectory`` (T, K, d) or None, ``stable`` (bool or
    None when not checked) and ``stats`` (a dict of scalars / arrays)."""

    psi: jax.Array
    state: object
    steps: jax.Array
    residual: jax.Array
    trajectory: jax.Array | None
    stable: jax.Array | None
    stats: dict


class Iteration:
    """Base class of the iterations (see the module docstring)."""

    tol: float | None = None
    max_steps: int = 0
    init_noise: float = 0.1
    prefers_sequential = False
    has_step = False

    def resolved(self, dtype) -> "Iteration":
        raise NotImplementedError

    def check(self, step_map, constraint) -> None:
        pass

    def run(self, problem, psi0, state0, key, record_every: int) -> Outcome:
        raise NotImplementedError
