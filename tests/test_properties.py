"""Property tests (hypothesis) of the map and the solver."""

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import vaefp_jax as vf

GRID = vf.LatentGrid.uniform(3)
coords = st.floats(-1.0, 1.0, allow_nan=False, width=32)
data = arrays(np.float32, st.tuples(st.integers(2, 12), st.just(2)), elements=coords)
psis = arrays(np.float32, (GRID.num_tiles, 2), elements=coords)
betas = st.floats(1e-4, 1e2, allow_nan=False)

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@SETTINGS
@given(x=data, psi=psis, beta=betas)
def test_step_stays_in_convex_hull(x, psi, beta):
    # Each ψ_b is a convex combination of the x_i: along every direction v its
    # projection lies within the data's projections (tolerance: float32 rounding).
    out = np.asarray(vf.step(psi, x, beta, GRID.log_prior), np.float64)
    assert np.all(np.isfinite(out))
    angles = np.linspace(0, np.pi, 16, endpoint=False)
    for v in np.stack([np.cos(angles), np.sin(angles)], 1):
        px, po = x.astype(np.float64) @ v, out @ v
        assert po.min() >= px.min() - 1e-5 and po.max() <= px.max() + 1e-5


@SETTINGS
@given(x=data, psi=psis, beta=betas)
def test_posterior_normalised_and_u_nonnegative(x, psi, beta):
    q = np.asarray(vf.tile_posterior(psi, x, beta, GRID.log_prior), np.float64)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(q >= 0)
    assert float(vf.order_parameter(psi, x, beta, GRID.log_prior)) >= 0.0


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), perm_seed=st.integers(0, 1000))
def test_same_seed_same_result_and_permutation_invariance(seed, perm_seed):
    x = vf.datasets.three_clusters(15, seed=seed % 1000).astype(np.float32)
    b = np.array([3e-3, 3e-2], np.float32)
    key = jax.random.PRNGKey(seed)
    a = vf.solve(x, b, GRID, key=key, throw=False)
    again = vf.solve(x, b, GRID, key=key, throw=False)
    np.testing.assert_array_equal(a.psi, again.psi)
    perm = np.random.default_rng(perm_seed).permutation(len(x))
    p = vf.solve(x[perm], b, GRID, key=key, throw=False)
    # Same fixed points; sums in another order differ by float32 rounding.
    np.testing.assert_allclose(p.psi, a.psi, atol=2e-5)
