"""schedule='compact' and 'pool' give the same fixed points and step counts as the fused sweep."""

import numpy as np
import pytest

import vaefp_jax as vf


def _assert_same_sweep(a, b):
    """Same step counts and convergence flags, same fixed points and residuals."""
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.converged, b.converged)
    np.testing.assert_allclose(a.psi, b.psi, atol=1e-12)
    np.testing.assert_allclose(a.residual, b.residual, rtol=1e-9)


def test_compact_schedule_equals_fused(x64):
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 1.0, 11)
    fused = vf.solve(x, betas, grid, schedule="fused", warn=False)
    for chunk in (1, 7, 1000):
        _assert_same_sweep(vf.solve(x, betas, grid, schedule="compact", chunk_steps=chunk, warn=False), fused)
    capped = vf.solve(x, betas, grid, schedule="compact", max_steps=5, chunk_steps=3, warn=False)
    np.testing.assert_array_equal(capped.steps, np.minimum(fused.steps, 5))


def test_compact_schedule_rejects_bad_options():
    x = vf.datasets.three_clusters(12)
    grid = vf.LatentGrid.uniform(3)
    with pytest.raises(ValueError, match="schedule"):
        vf.solve(x, [0.1], grid, schedule="eager")
    with pytest.raises(ValueError, match="record_every"):
        vf.solve(x, [0.1], grid, schedule="compact", record_every=2)
    with pytest.raises(ValueError, match="chunk_steps"):
        vf.solve(x, [0.1], grid, schedule="compact", chunk_steps=0)


def test_pool_schedule_equals_fused(x64):
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 1.0, 11)
    fused = vf.solve(x, betas, grid, schedule="fused", warn=False)
    assert len(set(np.asarray(fused.steps).tolist())) > 3  # slots really get refilled at different times
    for width in (1, 3, 11, 64):  # 64 > B: clipped to B
        _assert_same_sweep(vf.solve(x, betas, grid, schedule="pool", batch_size=width, warn=False), fused)
    capped = vf.solve(x, betas, grid, schedule="pool", batch_size=4, max_steps=5, warn=False)
    np.testing.assert_array_equal(capped.steps, np.minimum(fused.steps, 5))
    assert not np.any(capped.converged & (np.asarray(fused.steps) > 5))


def test_pool_schedule_per_beta_initial_psi(x64):
    # One ψ^0 per β: each slot must start from its own β's ψ^0 when refilled.
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(5)
    betas = np.geomspace(1e-2, 1.0, 7)
    rng = np.random.default_rng(0)
    psi0 = rng.normal(size=(7, grid.num_tiles, 2))
    fused = vf.solve(x, betas, grid, psi0=psi0, schedule="fused", warn=False)
    pool = vf.solve(x, betas, grid, psi0=psi0, schedule="pool", batch_size=2, warn=False)
    np.testing.assert_array_equal(pool.steps, fused.steps)
    np.testing.assert_allclose(pool.psi, fused.psi, atol=1e-12)


def test_default_schedule_is_pool_without_trajectories(x64):
    x = vf.datasets.three_clusters(20, seed=1)
    grid = vf.LatentGrid.uniform(4)
    betas = np.geomspace(1e-2, 1.0, 5)
    auto = vf.solve(x, betas, grid, warn=False)
    recorded = vf.solve(x, betas, grid, record_every=3, warn=False)  # needs the fused loop
    np.testing.assert_array_equal(auto.steps, recorded.steps)
    np.testing.assert_allclose(auto.psi, recorded.psi, atol=1e-12)
    assert recorded.trajectory is not None and auto.trajectory is None
    with pytest.raises(ValueError, match="record_every"):
        vf.solve(x, betas, grid, schedule="pool", record_every=2)
