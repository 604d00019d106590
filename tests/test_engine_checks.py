"""Checks of the composed engine on the problems it was built for (issue 14).

* Phase detection with the blocked map equals the dense map's on n = 4096 points.
* The full Figure 3 sweep (32 × 32 tiles, 64 β, float64) converges at every β with
  the accelerated iteration, and its refined β_c are the closed-form merge points:
  λ_max of the covariance of the points that merge (slow).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import vaefp_jax as vf

jax.config.update("jax_enable_x64", True)


def _lambda_max(points):
    return float(np.linalg.eigvalsh(np.cov(points.T, bias=True))[-1])


def test_blocked_map_phase_detection_equals_dense_on_4096_points():
    x = vf.datasets.three_clusters(4096, seed=3)
    grid = vf.LatentGrid.uniform(4)
    betas = np.geomspace(2e-3, 0.2, 9)
    kw = dict(iteration=vf.Damped(damping=0.0, tol=1e-12, max_steps=20_000), continuation="cooling",
              spectral_iters=50, throw=True)
    dense = vf.sweep(x, betas, grid, step_map=vf.DenseMap(), **kw)
    blocked = vf.sweep(x, betas, grid, step_map=vf.BlockedMap(tile_chunk=8, data_chunk=1000), **kw)
    # the two maps differ only in the order of their sums: fixed points to the solver's
    # tolerance, u and its derivatives to 1e-10 relative
    np.testing.assert_allclose(blocked.psi, dense.psi, atol=1e-10)
    for name in ("u", "du", "d2u"):
        a, b = getattr(blocked, name), getattr(dense, name)
        assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b)), name
    np.testing.assert_array_equal(blocked.distinct, dense.distinct)
    peaks_b = vf.critical_betas(blocked, variable="log_beta")
    peaks_d = vf.critical_betas(dense, variable="log_beta")
    assert [p.index for p in peaks_b] == [p.index for p in peaks_d] and peaks_d
    # a transition was seen: the collapsed phase at large β, several fixed points at small β
    assert dense.distinct[-1] == 1 and dense.distinct[0] > 1


@pytest.mark.slow
def test_full_figure3_sweep_converges_with_the_accelerated_iteration():
    x = vf.datasets.three_clusters(120)
    grid = vf.LatentGrid.uniform(32)
    betas = np.geomspace(1e-4, 1.0, 64)
    res = vf.sweep(x, betas, grid, iteration=vf.Accelerated(), key=jax.random.PRNGKey(0), spectral_iters=100,
                   throw=False)
    assert res.converged.all(), res.solution.failures()
    peaks = vf.critical_betas(res, top_k=3, variable="log_beta")
    refined = sorted(vf.refine_critical_beta(res, p, x, grid, iterations=25, spectral_iters=500) for p in peaks)
    # the merged branch loses stability where β reaches λ_max of the covariance of the points
    # that merge: exactly for the last merge (everything); for the close pair (the first 80
    # points) and a single cluster's merge up to the tile basis and the other clusters'
    # weights, within 2 %
    clusters = [x[:40], x[40:80], x[80:]]
    np.testing.assert_allclose(refined[2], _lambda_max(x), rtol=1e-6)
    np.testing.assert_allclose(refined[1], _lambda_max(x[:80]), rtol=2e-2)
    assert min(abs(refined[0] / _lambda_max(c) - 1) for c in clusters) < 2e-2, refined[0]
