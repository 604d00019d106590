"""schedule='compact' gives the same fixed points and step counts as the fused sweep."""

import numpy as np
import pytest

import vaefp_jax as vf


def test_compact_schedule_equals_fused(x64):
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 1.0, 11)
    fused = vf.solve(x, betas, grid, warn=False)
    for chunk in (1, 7, 1000):
        compact = vf.solve(x, betas, grid, schedule="compact", chunk_steps=chunk, warn=False)
        np.testing.assert_array_equal(compact.steps, fused.steps)
        np.testing.assert_array_equal(compact.converged, fused.converged)
        np.testing.assert_allclose(compact.psi, fused.psi, atol=1e-12)
        np.testing.assert_allclose(compact.residual, fused.residual, rtol=1e-9)
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
