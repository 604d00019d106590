"""The engine's one loop (vaefp_jax.engine.loop): it owns the step limit, the non-finite stop
and the recording, and any iteration written as init/step/terminate/postprocess runs through
``solve`` under every schedule."""

import ast
import dataclasses
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax.engine.loop import iterate
from vaefp_jax.iterations.base import Iteration, Outcome

ROOT = pathlib.Path(vf.__file__).parent


def test_no_loop_outside_the_engine():
    """``lax.while_loop`` is called in engine/ only (the loop and the pool), never in iterations/."""
    calls = []
    for path in (ROOT / "iterations").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "while_loop":
                calls.append(f"{path.name}:{node.lineno}")
    assert calls == []


class _Carry(NamedTuple):
    psi: jax.Array
    residual: jax.Array
    steps: jax.Array


@dataclasses.dataclass(frozen=True)
class _Halving:
    """ψ ← ψ/2 (+ NaN from step ``poison`` on): a toy iteration to watch the loop's rules."""

    tol: float = 1e-3
    step_limit: int = 100
    poison: int = 10**9
    branches = False

    def init(self, problem, psi0):
        return _Carry(psi0, jnp.asarray(jnp.inf), jnp.int32(0))

    def step(self, problem, c):
        new = c.psi / 2 + jnp.where(c.steps + 1 >= self.poison, jnp.nan, 0.0)
        return _Carry(new, jnp.sqrt(jnp.sum((new - c.psi) ** 2)), c.steps + 1)

    def terminate(self, problem, c):
        return c.residual < self.tol


def test_loop_stops_at_tolerance_limit_and_non_finite_iterate():
    psi0 = jnp.ones(3)
    # ‖Δψ‖ after t steps = √3 / 2^t < 1e-3 first at t = 11
    it = _Halving()
    out = iterate(it, None, it.init(None, psi0))
    assert int(out.steps) == 11 == int(out.carry.steps)
    np.testing.assert_allclose(out.carry.psi, 0.5**11, rtol=0)
    # the step limit
    it = _Halving(tol=0.0, step_limit=7)
    assert int(iterate(it, None, it.init(None, psi0)).steps) == 7
    # a NaN from step 4 on: the loop stops at step 4, not at the limit
    it = _Halving(tol=0.0, poison=4)
    out = iterate(it, None, it.init(None, psi0))
    assert int(out.steps) == 4 and not np.all(np.isfinite(np.asarray(out.carry.psi)))


def test_loop_records_every_r_steps_and_repeats_the_last():
    it = _Halving()
    out = iterate(it, None, it.init(None, jnp.ones(2)), record_every=3)
    traj = np.asarray(out.trajectory)
    assert traj.shape == (100 // 3 + 1, 2)
    expected = [0.5 ** min(3 * r, 11) for r in range(traj.shape[0])]   # stopped at step 11
    np.testing.assert_allclose(traj[:, 0], expected, rtol=0)


class _RelaxCarry(NamedTuple):
    psi: jax.Array
    state: object
    residual: jax.Array
    steps: jax.Array


@dataclasses.dataclass(frozen=True)
class Relaxed(Iteration):
    """A new iteration in this test only: ψ ← G(ψ) with the step halved whenever the residual
    grows. One class, the four protocol methods: ``solve`` runs it under Pool and Vmapped."""

    tol: float = 1e-10
    max_steps: int = 20_000
    init_noise: float = 0.1

    @property
    def step_limit(self):
        return self.max_steps

    def resolved(self, dtype):
        return self

    def init(self, problem, psi0, state0, key):
        return _RelaxCarry(psi0, state0, jnp.asarray(jnp.inf, psi0.dtype), jnp.int32(0))

    def step(self, problem, c):
        target, state, _ = problem.update(c.psi, c.state, c.steps)
        return _RelaxCarry(target, state, jnp.sqrt(jnp.sum((target - c.psi) ** 2)), c.steps + 1)

    def terminate(self, problem, c):
        return c.residual < self.tol

    def postprocess(self, problem, c):
        return Outcome(psi=c.psi, state=c.state, steps=c.steps, residual=c.residual, trajectory=None, stable=None,
                       stats={})


@pytest.mark.parametrize("schedule", [vf.Pool(width=2), vf.Vmapped(batch_size=3), vf.Vmapped(batch_size=1)],
                         ids=["pool", "vmapped", "one-at-a-time"])
def test_a_new_iteration_runs_through_solve_under_every_schedule(schedule):
    """The new iteration reaches the same fixed points, in the same steps, as Damped(damping=0) —
    the same arithmetic — and each is a fixed point of the float64 reference map (eq. 15)."""
    with jax.enable_x64(True):
        x = vf.datasets.three_clusters(20, seed=1)
        grid = vf.LatentGrid.uniform(3)
        betas = np.array([0.05, 0.2, 0.6, 1.5, 4.0])
        new = vf.solve(x, betas, grid, iteration=Relaxed(), schedule=schedule, throw=True)
        ref = vf.solve(x, betas, grid, iteration=vf.Damped(damping=0.0, tol=1e-10, max_steps=20_000),
                       schedule=vf.Vmapped(batch_size=1), throw=True)
        np.testing.assert_allclose(np.asarray(new.psi), np.asarray(ref.psi), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(new.steps), np.asarray(ref.steps))
        for j, b in enumerate(betas):
            image = vf.step(new.psi[j], jnp.asarray(x), b, jnp.asarray(grid.log_prior))
            assert float(jnp.max(jnp.abs(image - new.psi[j]))) < 1e-9
