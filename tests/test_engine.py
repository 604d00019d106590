"""Shared tests over every valid iteration × step map × constraint × schedule (tests/registry.py).

Each combination is solved under ``jit`` and ``vmap`` (over two data sets) and
checked against the NumPy float64 reference map; its smooth variants give u′
and u″ that are checked against finite differences of u; and the sharded
schedule (two virtual CPU devices, a subprocess) equals one device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import vaefp_jax as vf

sys.path.insert(0, os.path.dirname(__file__))
import registry  # noqa: E402

jax.config.update("jax_enable_x64", True)

COMBOS = registry.combinations()
IDS = [c[0] for c in COMBOS]


def _solve(x, it, sm, con, sch, **kw):
    _, grid, betas = registry.problem()
    return vf.solve(x, betas, grid, iteration=it, step_map=sm, constraint=con, schedule=sch,
                    psi0=grid.z, throw=False, **kw)


@functools.lru_cache(maxsize=None)
def _baseline(iteration_name: str, constraint_name: str):
    """The dense map, one problem at a time, eagerly: what every combination must reproduce."""
    x, _, _ = registry.problem()
    sol = _solve(x, registry.ITERATIONS[iteration_name], vf.DenseMap(), registry.CONSTRAINTS[constraint_name],
                 vf.Vmapped(batch_size=1))
    return jax.tree.map(np.asarray, sol)


@pytest.mark.parametrize("name,iteration,step_map,constraint,schedule", COMBOS, ids=IDS)
def test_fixed_points_under_jit_and_vmap(name, iteration, step_map, constraint, schedule):
    x, grid, betas = registry.problem()
    xs = np.stack([x, 1.05 * x])
    run = jax.jit(jax.vmap(lambda xx: _solve(xx, iteration, step_map, constraint, schedule)))
    sol = jax.tree.map(np.asarray, run(xs))
    assert sol.psi.shape == (2, 3, grid.num_tiles, 2)
    assert (sol.status == vf.Status.CONVERGED).all(), sol.status
    for j in range(2):
        stats = {k: v[j] for k, v in sol.stats.items()}
        for b in range(3):
            psi = sol.psi[j, b]
            target = registry.ref_target(psi, xs[j], betas[b], grid, constraint, b, stats)
            # a fixed point of the float64 reference map, to the solver's tolerance over (1 − ρ);
            # in bound mode the multipliers are the barrier's, exact only to its Newton
            # stopping rule (Newton steps down to the rounding level; ψ of empty tiles,
            # s̄ ~ 1e-15, is fixed only to ~1e-7 by the weak curvature there)
            tol = 1e-6 if isinstance(constraint, vf.LipschitzBound) else 1e-8
            assert np.linalg.norm(target - psi) < tol, (j, b, np.linalg.norm(target - psi))
            if isinstance(constraint, vf.LipschitzBound):
                C = vf.constraints.lipschitz_coefficients(grid, constraint.L[b])
                mask = vf.constraints.support_mask(grid, constraint.support, constraint.r)
                assert float(vf.constraints.violation(psi, C, mask)) <= 0.0
    # the same fixed points as the dense map solved one problem at a time, eagerly
    base = _baseline(name.split("-")[0], name.split("-")[2])
    np.testing.assert_allclose(sol.psi[0], base.psi, atol=1e-8)
    if isinstance(iteration, vf.Damped):
        # the same iteration whatever the map and schedule: the same step counts (±1 for rounding at the stop)
        assert np.all(np.abs(sol.steps[0] - base.steps) <= 1)


# Every schedule gives the same fixed points (asserted above to 1e-8), and the derivative
# is a function of the fixed point and the map: one schedule per iteration × map × constraint.
# Accelerated differs from Damped only before the fixed point: with the dense map in every run,
# through the blocked and Pallas maps behind `slow` (Damped covers those maps in every run).
SMOOTH = [pytest.param(*c, id=c[0], marks=() if c[0].startswith("damped") or "-dense-" in c[0] else pytest.mark.slow)
          for c in COMBOS if c[3].smooth and c[0].endswith("-mapped")]


@pytest.mark.parametrize("name,iteration,step_map,constraint,schedule", SMOOTH)
def test_implicit_derivatives_against_finite_differences(name, iteration, step_map, constraint, schedule):
    x, grid, _ = registry.problem()
    if isinstance(constraint, vf.LipschitzStrength):
        constraint = dataclasses.replace(constraint, strength=0.05)   # the same problem at the three β
    beta, h = 0.01, 1e-4
    res = vf.sweep(x, beta + h * np.array([-1.0, -0.5, 0.0, 0.5, 1.0]), grid, iteration=iteration,
                   step_map=step_map, constraint=constraint, schedule=schedule, psi0=grid.z, spectral_iters=0,
                   throw=True)
    u = res.u
    # central differences at h and h/2, Richardson-extrapolated: truncation O(h⁴) (u‴ reaches
    # ~1e7 here, so a plain central difference at h/β = 1 % is off by ~2e-3 relative);
    # rounding ~1e-12/h² ≈ 1e-4 for u″ (fixed points to tol 1e-12)
    du_fd = (4 * (u[3] - u[1]) / h - (u[4] - u[0]) / (2 * h)) / 3
    d2u_fd = (4 * (u[3] - 2 * u[2] + u[1]) / (h / 2) ** 2 - (u[4] - 2 * u[2] + u[0]) / h**2) / 3
    assert abs(res.du[2] - du_fd) <= 1e-5 * abs(du_fd) + 1e-7, (res.du[2], du_fd)
    assert abs(res.d2u[2] - d2u_fd) <= 1e-3 * abs(d2u_fd) + 1e-2, (res.d2u[2], d2u_fd)


@pytest.mark.parametrize("name,iteration,constraint,schedule", registry.invalid_combinations(),
                         ids=[c[0] for c in registry.invalid_combinations()])
def test_invalid_combinations_are_refused(name, iteration, constraint, schedule):
    x, grid, betas = registry.problem()
    with pytest.raises(ValueError, match="Accelerated|Pool|batch_size=1"):
        vf.solve(x, betas, grid, iteration=iteration, constraint=constraint, schedule=schedule)


def test_wrong_strategy_types_are_refused_in_one_line():
    x, grid, betas = registry.problem()
    for kw in (dict(iteration="tight"), dict(step_map="dense"), dict(constraint=0.5), dict(schedule="pool")):
        with pytest.raises(TypeError) as err:
            vf.solve(x, betas, grid, **kw)
        assert "\n" not in str(err.value) and "must be a" in str(err.value)
    with pytest.raises(ValueError, match="smooth"):
        vf.sweep(x, betas, grid, constraint=vf.LipschitzBound(2.0, r=0.4))


SHARDED_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import vaefp_jax as vf
import registry
assert len(jax.devices()) == 2, jax.devices()
x, grid, betas = registry.problem()
out = {}
map_name = sys.argv[2]
for name, it, sm, con, sch in registry.combinations():
    if not name.endswith("-mapped") or name.split("-")[1] != map_name:
        continue  # one inner schedule per iteration × map × constraint: the schedules are compared
                  # above; Pallas inside the shards: tests/test_engine_sharded.py
    kw = dict(iteration=it, step_map=sm, constraint=con, psi0=grid.z, throw=False)
    one = vf.solve(x, betas, grid, schedule=sch, **kw)
    two = vf.solve(x, betas, grid, schedule=vf.Sharded(inner=sch), **kw)
    out[name] = dict(dpsi=float(np.max(np.abs(np.asarray(one.psi) - np.asarray(two.psi)))),
                     same_status=bool(np.array_equal(np.asarray(one.status), np.asarray(two.status))),
                     converged=bool(np.asarray(two.converged).all()))
print(json.dumps(out))
"""


@pytest.mark.parametrize("map_name", [
    "dense",                                                     # every iteration × constraint
    pytest.param("blocked", marks=pytest.mark.slow),             # the same through the blocked map
])
def test_sharded_equals_one_device(map_name):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, os.path.dirname(__file__), map_name], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {name for name in IDS if name.endswith("-mapped") and name.split("-")[1] == map_name}
    assert len(out) >= 2
    for name, r in out.items():
        # the same arithmetic per problem on each device; only the batch layout differs
        assert r["dpsi"] < 1e-10 and r["same_status"] and r["converged"], (name, r)
