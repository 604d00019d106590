"""The one entry point: ``solve(x, betas, grid, iteration=, step_map=, constraint=, schedule=)``.

What varies is passed in as a strategy object, so every feature composes with
every other: the *iteration* (:class:`~vaefp_jax.Damped` with its paper and tight
presets, :class:`~vaefp_jax.Accelerated`), the *step map* (dense, blocked,
Pallas), the *constraint* (none, a Lipschitz penalty of a given strength, a
Lipschitz bound L) and the *schedule* (pool, vmapped, sharded over devices). An
invalid combination is refused here with a one-line ``ValueError``; inputs are
validated here; inside, everything is one jitted program.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from vaefp_jax import _validate
from vaefp_jax.constraints.strategies import Constraint, Unconstrained
from vaefp_jax.engine.initial import initial_batch
from vaefp_jax.engine.schedules import Schedule, default_schedule
from vaefp_jax.engine.solution import Solution
from vaefp_jax.equations import working_dtype
from vaefp_jax.grid import LatentGrid
from vaefp_jax.iterations.base import Iteration
from vaefp_jax.iterations.damped import Damped
from vaefp_jax.maps.auto import default_step_map
from vaefp_jax.maps.base import StepMap

__all__ = ["Setup", "solve", "prepare"]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["x", "log_prior", "theta", "shared"],
                   meta_fields=["dtype", "iteration", "step_map", "constraint", "schedule", "lane_shape", "itemsize",
                                "num"])
@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a solve runs, validated and resolved by :func:`prepare` (a pytree: the arrays
    are its leaves, the strategies and sizes its static part).

    Attributes:
      x: (n, d) the data in the working dtype; ``dtype`` that dtype.
      log_prior: (K,) log π of the grid's tiles.
      theta: the per-problem values, each (B,): ``beta`` and the constraint's.
      shared: the constraint's arrays shared by all problems.
      iteration, step_map, constraint, schedule: the resolved strategies (the iteration's tol a
        number, the map chosen for the size, the schedule possibly still to be sized).
      lane_shape: the block one problem's map holds (``StepMap.lane_shape``); ``itemsize``: bytes
        per number; ``num``: B, the number of problems.
    """

    x: jax.Array
    log_prior: jax.Array
    theta: dict
    shared: dict
    dtype: object
    iteration: Iteration
    step_map: StepMap
    constraint: Constraint
    schedule: Schedule
    lane_shape: tuple
    itemsize: int
    num: int

    def describe(self) -> str:
        """The four strategies, as a Solution records them."""
        return ", ".join(repr(v) for v in (self.iteration, self.step_map, self.constraint, self.schedule))


def _expect(name, value, kind):
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__} (for example {_EXAMPLES[kind]}), got {value!r}")


_EXAMPLES = {Iteration: "Damped.paper()", StepMap: "DenseMap()", Constraint: "LipschitzStrength(0.5)",
             Schedule: "Pool()"}


def prepare(x, betas, grid: LatentGrid, *, iteration=None, step_map=None, constraint=None, schedule=None,
            record_every: int = 0):
    """Validate and resolve everything a solve needs: the :class:`Setup` that :func:`solve` runs
    (also used by :func:`vaefp_jax.sweep`). Raises ``ValueError`` or ``TypeError`` with a
    one-line message for bad input or an invalid combination."""
    iteration = Damped.paper() if iteration is None else iteration
    constraint = Unconstrained() if constraint is None else constraint
    _expect("iteration", iteration, Iteration)
    _expect("constraint", constraint, Constraint)
    if step_map is not None:
        _expect("step_map", step_map, StepMap)
    if schedule is not None:
        _expect("schedule", schedule, Schedule)
    for name, obj in (("iteration", iteration), ("step_map", step_map), ("constraint", constraint.static()),
                      ("schedule", schedule)):
        try:
            hash(obj)
        except TypeError:
            raise ValueError(f"{name} must be hashable (numbers, strings and tuples only): {obj!r}") from None
    _validate.check_data(x)
    _validate.check_beta(betas, name="betas", batched=True)
    _validate.check_log_prior(grid.log_prior)
    _validate.check_int("record_every", record_every, 0)
    dtype = working_dtype(jnp.asarray(x).dtype)
    x = jnp.asarray(x, dtype)
    (n, d), K, B = x.shape, grid.num_tiles, int(np.shape(betas)[0])
    step_map = default_step_map(n, K, d, itemsize=jnp.dtype(dtype).itemsize) if step_map is None else step_map
    step_map.check(n, K, d)
    iteration = iteration.resolved(dtype)
    iteration.check(step_map, constraint)
    per_problem, shared = constraint.setup(grid, x, B)
    cast = lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else jnp.asarray(a)
    theta = {"beta": jnp.asarray(betas, dtype), **{k: cast(v) for k, v in per_problem.items()}}
    shared = {k: cast(v) for k, v in shared.items()}
    schedule = default_schedule(iteration, constraint, record_every) if schedule is None else schedule
    schedule.check(iteration, record_every)
    return Setup(x=x, dtype=dtype, log_prior=jnp.asarray(grid.log_prior, dtype), theta=theta, shared=shared,
                 iteration=iteration, step_map=step_map, constraint=constraint, schedule=schedule,
                 lane_shape=tuple(step_map.lane_shape(n, K)), itemsize=int(jnp.dtype(dtype).itemsize), num=B)


def run(setup: Setup, psi0, key, record_every: int = 0, progress=None):
    """Run a prepared solve from ψ^0 ((K, d) shared or (B, K, d)) by its schedule's ``execute``;
    the raw outputs. ``progress(stage, done, total)`` is told what the schedule can report."""
    return setup.schedule.execute(setup, psi0, key, record_every, progress)


def solve(x: ArrayLike, betas: ArrayLike, grid: LatentGrid, *, iteration: Iteration | None = None,
          step_map: StepMap | None = None, constraint: Constraint | None = None, schedule: Schedule | None = None,
          psi0: ArrayLike | None = None, key: jax.Array | None = None, record_every: int = 0,
          throw: bool | None = None) -> Solution:
    """Fixed points of eq. (15) for every β of ``betas``, in one jitted program.

    Args:
      x: (n, d) data; its dtype sets the working precision (float64 needs
        ``jax.config.update("jax_enable_x64", True)``).
      betas: (B,) β > 0.
      grid: the tile basis (prior masses and the initial ψ).
      iteration: default :meth:`Damped.paper` (Appendix A); :meth:`Damped.tight`
        for accurate fixed points; :class:`Accelerated` near transitions.
      step_map: default :func:`~vaefp_jax.maps.default_step_map` (dense, or on CPU
        for large n the blocked map); :class:`BlockedMap`, :class:`PallasMap`.
      constraint: default :class:`Unconstrained`; :class:`LipschitzStrength`,
        :class:`LipschitzBound` (their per-problem values broadcast against β).
      schedule: default :func:`~vaefp_jax.engine.schedules.default_schedule`;
        :class:`Pool`, :class:`Vmapped`, :class:`Sharded`. The results do not depend on it.
      psi0: (K, d) shared or (B, K, d) one per β; default :func:`initial_psi` with
        the iteration's ``init_noise`` and ``key``, the same for every β.
      key: PRNG key (initial noise, spectral estimates); default ``PRNGKey(0)``.
      record_every: if > 0, also return ψ every that many steps (Vmapped only).
      throw: ``True`` raise :class:`NotConvergedError` if a β did not converge,
        ``None`` (default) warn naming them, ``False`` leave it to ``Solution.status``.

    Returns:
      :class:`Solution` with ``psi`` (B, K, d) and per-β ``status``, ``steps``, ``residual``.
    """
    setup = prepare(x, betas, grid, iteration=iteration, step_map=step_map, constraint=constraint,
                    schedule=schedule, record_every=record_every)
    psi0 = initial_batch(setup.x, grid, psi0, setup.iteration.init_noise, key, setup.num, setup.dtype,
                         broadcast=False)
    key = jax.random.PRNGKey(0) if key is None else key
    out = run(setup, psi0, key, record_every)
    return to_solution(setup, out).check(throw, stacklevel=2)


def to_solution(setup: Setup, out) -> Solution:
    tol = setup.iteration.tol
    assert tol is not None, "prepare resolves the iteration's tol"
    return Solution(beta=setup.theta["beta"], psi=out["psi"], status=out["status"], steps=out["steps"],
                    residual=out["residual"], stats=out["stats"], trajectory=out["trajectory"],
                    tol=float(tol), setup=setup.describe())
