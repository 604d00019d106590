"""The accelerated solver reaches the same stable fixed point as plain iteration."""

import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import tile_jacobian
from vaefp_jax.accelerate import solve_accelerated


def test_near_critical_same_stable_fixed_point_fewer_evaluations(x64):
    x = vf.datasets.gaussian_blob(120, seed=0)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(6)
    betas = np.array([0.97, 1.03, 1.3]) * lam
    plain = vf.solve(x, betas, grid, protocol=vf.Protocol(damping=0.0, tol=1e-11, max_steps=200_000))
    acc = solve_accelerated(x, betas, grid, tol=1e-11, power_iters=600)
    assert np.all(acc.converged) and np.all(acc.stable)
    np.testing.assert_allclose(acc.psi, plain.psi, atol=1e-6)
    lp = jnp.asarray(grid.log_prior)
    for j, b in enumerate(betas):
        rho = float(tile_jacobian.spectral_radius(acc.psi[j], jnp.asarray(x), b, lp, num_iter=2000))
        assert rho < 1 and rho == pytest.approx(float(acc.spectral_radius[j]), rel=1e-3)
    # within a few % of β_c plain iteration is slow; the accelerated one is not
    assert np.all(np.asarray(acc.evaluations[:2]) * 4 < np.asarray(plain.steps[:2]))


def test_escapes_the_unstable_collapsed_point(x64):
    # Start exactly at the collapsed configuration below β_c: a fixed point at
    # every β, unstable here. Plain Newton would stay; the solver must leave it.
    x = vf.datasets.gaussian_blob(120, seed=0)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(6)
    collapsed = np.broadcast_to(x.mean(0), (grid.num_tiles, 2))
    acc = solve_accelerated(x, np.array([0.7 * lam]), grid, psi0=collapsed, power_iters=600)
    assert bool(acc.converged[0]) and float(acc.spectral_radius[0]) < 1
    assert int(acc.escapes[0]) >= 1
    u = float(vf.order_parameter(acc.psi[0], x, 0.7 * lam, grid.log_prior))
    assert u < np.trace(np.cov(x.T, bias=True)) * 0.99  # split: lower error than collapsed
