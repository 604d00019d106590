"""What an iteration is: the strategy that drives one fixed-point problem to its answer.

An iteration is an immutable, hashable object holding its own tolerances, with

* ``resolved(dtype)``: a copy whose ``tol`` is a number (``None`` means: by dtype);
* ``check(step_map, constraint)``: raises ``ValueError`` for a combination it cannot do;
* the step protocol of :mod:`vaefp_jax.engine.loop`: ``init(problem, psi0, state0, key)``,
  ``step(problem, carry)``, ``terminate(problem, carry)``, ``postprocess(problem, carry) ->
  Outcome`` and ``step_limit``. The engine's one loop drives it (and the pool schedule steps
  it problem by problem); no iteration writes a loop of its own;
* ``branches``: True when its step branches per problem (``lax.cond``/``lax.switch`` on the
  problem's own values): under a vmapped batch every branch would run for every problem, so
  the schedules map such problems one at a time.

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
    init_noise: float = 0.1
    branches = False

    @property
    def step_limit(self) -> int:
        """The most steps of the engine's loop."""
        raise NotImplementedError

    def resolved(self, dtype) -> "Iteration":
        raise NotImplementedError

    def check(self, step_map, constraint) -> None:
        pass

    def init(self, problem, psi0, state0, key):
        raise NotImplementedError

    def step(self, problem, carry):
        raise NotImplementedError

    def terminate(self, problem, carry) -> jax.Array:
        raise NotImplementedError

    def postprocess(self, problem, carry) -> Outcome:
        raise NotImplementedError

    def run(self, problem, psi0, state0, key=None, record_every: int = 0) -> Outcome:
        """One problem from ψ0 through the engine's loop (:func:`vaefp_jax.engine.loop.iterate`):
        ``init``, the steps, ``postprocess``; with ``record_every`` > 0 the trajectory too."""
        from vaefp_jax.engine import loop

        return loop.run(self, problem, self.init(problem, psi0, state0, key), record_every)
