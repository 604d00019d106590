"""PallasMap: the Pallas kernels equal the XLA map.

On CPU the kernels run in Pallas's interpreter (the same kernel code the GPU
compiles); the references are ``vaefp_jax.step`` (XLA) and the NumPy float64
map of conftest.py. The GPU lowering itself (Pallas → Triton IR) is checked
without a GPU by lowering for the "cuda" platform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_map_equals_step, np_solve, np_step, random_problem

import vaefp_jax as vf

# (n, K, d, data_block, tile_block, dead tiles): blocks that do not divide n or
# K (padded points and tiles), blocks larger than the problem, blocks of 1, a
# whole tile block of zero prior mass (tiles 4..7 with tile_block 4), d = 1..8.
CASES = [
    (37, 23, 2, 8, 4, (3,)),
    (41, 29, 2, 16, 4, (4, 5, 6, 7)),
    (30, 10, 3, 128, 128, ()),
    (13, 7, 5, 1, 1, ()),
    (20, 33, 8, 4, 8, (0,)),
    (25, 12, 1, 8, 2, ()),
]


@pytest.mark.parametrize("n, K, d, data_block, tile_block, dead", CASES)
@pytest.mark.parametrize("beta_scale", [0.01, 0.3, 3.0])
def test_pallas_map_equals_step_float64(x64, n, K, d, data_block, tile_block, dead, beta_scale):
    assert_map_equals_step(vf.PallasMap(data_block=data_block, tile_block=tile_block), n, K, d, dead, beta_scale)


def test_pallas_map_float32_and_extreme_beta():
    x, psi, lp, scale = random_problem(200, 50, 2, seed=1)
    x32, psi32 = np.float32(x), np.float32(psi)
    for beta in (1e-6, 1e6):  # log space: no over-/underflow in float32
        got = np.asarray(vf.PallasMap(data_block=32, tile_block=16)(psi32, x32, beta, lp))
        assert got.dtype == np.float32 and np.all(np.isfinite(got))
        # Each ψ_b is a convex combination of the data (eq. 15) ...
        assert np.all(got >= x32.min(axis=0) - 1e-6) and np.all(got <= x32.max(axis=0) + 1e-6)
    # ... and at β → ∞ every tile sits at the data mean.
    np.testing.assert_allclose(got, np.broadcast_to(x.mean(axis=0), got.shape), rtol=0, atol=1e-4)
    beta = 0.3 * scale
    got = np.asarray(vf.PallasMap(data_block=32, tile_block=16)(psi32, x32, beta, lp))
    # float32 logits of size ~1/β·|x|² carry ~6e-8 relative error each: 1e-5·max|x| on ψ.
    np.testing.assert_allclose(got, np_step(psi32, x32, beta, lp), rtol=0, atol=1e-5 * np.abs(x).max())


def test_pallas_map_vmapped_over_beta_and_psi(x64):
    """The β batch of ``solve``: Pallas's batching rule adds a grid axis."""
    x, psi, lp, scale = random_problem(45, 19, 2, seed=5)
    betas = scale * np.array([0.02, 0.2, 2.0])
    psis = psi[None] + 0.1 * np.random.default_rng(0).normal(size=(3,) + psi.shape)
    F = vf.PallasMap(data_block=16, tile_block=8)
    got = jax.jit(jax.vmap(lambda p, b: F(p, jnp.asarray(x), b, jnp.asarray(lp))))(psis, betas)
    for i, b in enumerate(betas):
        np.testing.assert_allclose(np.asarray(got[i]), np_step(psis[i], x, b, lp), rtol=0, atol=1e-12)


def test_solve_with_pallas_map_equals_solve(x64):
    """The whole paper-protocol sweep through the kernels: same fixed points and
    step counts as the XLA map, and as the NumPy iteration."""
    x = vf.datasets.three_clusters(60)
    grid = vf.LatentGrid.uniform(5)
    betas = np.array([2e-3, 0.05, 0.5])
    a = vf.solve(x, betas, grid, step_map=vf.PallasMap(data_block=16, tile_block=8), schedule=vf.Pool(width=2),
                 throw=False)
    b = vf.solve(x, betas, grid, step_map=vf.DenseMap(), schedule=vf.Pool(width=2), throw=False)
    np.testing.assert_array_equal(np.asarray(a.steps), np.asarray(b.steps))
    np.testing.assert_allclose(np.asarray(a.psi), np.asarray(b.psi), rtol=0, atol=1e-10)
    psi0 = np.asarray(vf.initial_psi(x, grid))
    psi, steps, _ = np_solve(x, betas[1], grid.log_prior, psi0, 0.1, 1e-3, 400)
    assert int(a.steps[1]) == steps
    np.testing.assert_allclose(np.asarray(a.psi[1]), psi, rtol=0, atol=1e-10)


def test_pallas_map_is_a_static_value():
    P = vf.PallasMap
    assert P(8, 16) == P(8, 16) and hash(P(8, 16)) == hash(P(8, 16))
    assert P(8, 16) != P(8, 32)


def _lower_for_gpu(n, K, d, lanes):
    x, psi, lp, _ = random_problem(n, K, d, seed=0)
    F = vf.PallasMap(interpret=False)
    f = jax.jit(jax.vmap(lambda p, b: F(p, jnp.float32(x), b, jnp.float32(lp))))
    args = (jnp.zeros((lanes, K, d), jnp.float32), jnp.ones((lanes,), jnp.float32))
    return f.trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def test_kernels_lower_to_triton_without_a_gpu():
    """Pallas → Triton IR for the "cuda" platform runs on the host: two Triton
    calls (row and column kernels) with the β lanes as a grid axis. (Triton's own
    compilation to PTX and the timings need a GPU: benchmarks/floor.py.)"""
    text = _lower_for_gpu(n=120, K=1024, d=2, lanes=8)
    calls = [line for line in text.splitlines() if "xla.gpu.triton" in line]
    assert len(calls) == 2
    assert 'name = "vaefp_row_logsumexp"' in calls[0] and 'name = "vaefp_column_softmax"' in calls[1]
    assert "grid_y = 8" in calls[0] and "grid_y = 8" in calls[1]  # one launch for all β
    assert "grid_x = 2 " in calls[0] and "grid_x = 8 " in calls[1]  # 128/64 point blocks, 1024/128 tile blocks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(data_block=0), "data_block must be a positive power of two"),
        (dict(data_block=48), "data_block must be a positive power of two"),
        (dict(tile_block=2.5), "tile_block must be a positive power of two"),
        (dict(tile_block=True), "tile_block must be a positive power of two"),
    ],
)
def test_block_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vf.PallasMap(**kwargs)


def test_input_errors():
    # The map checks only what its kernels cannot do (d ≤ 8); solve validates the rest, whatever the map.
    x, psi, lp, _ = random_problem(10, 4, 2, seed=0)
    grid = vf.LatentGrid.uniform(2)
    with pytest.raises(ValueError, match="psi0 has 3 data dimensions"):
        vf.solve(x, [0.1], grid, step_map=vf.PallasMap(), psi0=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="betas must be > 0"):
        vf.solve(x, [0.0], grid, step_map=vf.PallasMap())
    x9, psi9, lp9, _ = random_problem(10, 4, 9, seed=0)
    with pytest.raises(ValueError, match="d ≤ 8, got d = 9"):
        vf.PallasMap()(psi9, x9, 0.1, lp9)
    with pytest.raises(ValueError, match="d ≤ 8, got d = 9"):
        vf.solve(x9, [0.1], vf.LatentGrid.uniform(2), step_map=vf.PallasMap())
