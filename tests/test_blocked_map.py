"""BlockedMap: the blocked map equals the dense one, alone and in ``solve``.

References: ``vaefp_jax.step`` / ``vaefp_jax.solve`` with ``DenseMap`` and the
NumPy float64 map of conftest.py written from the paper's formulas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_map_equals_step, np_solve, np_step, random_problem

import vaefp_jax as vf

# (n, K, d, tile_chunk, data_chunk, dead tiles): the three distance formulas
# (d ≤ 8 unrolled, ≤ 64 direct, > 64 matrix product), chunks that do not divide
# n or K, chunks of 1, chunks larger than the problem, and a whole tile block
# of zero prior mass (tiles 4..7 with tile_chunk 4).
CASES = [
    (37, 23, 2, 5, 8, (3,)),
    (41, 29, 2, 4, 1, (4, 5, 6, 7)),
    (50, 19, 20, 4, 7, ()),
    (33, 17, 100, 6, 9, (0,)),
    (30, 10, 3, 100, 100, ()),
    (13, 7, 5, 1, 13, ()),
]


@pytest.mark.parametrize("n, K, d, tile_chunk, data_chunk, dead", CASES)
@pytest.mark.parametrize("beta_scale", [0.01, 0.3, 3.0])
def test_blocked_map_equals_step_float64(x64, n, K, d, tile_chunk, data_chunk, dead, beta_scale):
    assert_map_equals_step(vf.BlockedMap(tile_chunk=tile_chunk, data_chunk=data_chunk), n, K, d, dead, beta_scale)


def test_blocked_map_float32_and_extreme_beta():
    x, psi, lp, scale = random_problem(200, 50, 2, seed=1)
    x32, psi32 = np.float32(x), np.float32(psi)
    for beta in (1e-6, 1e6):  # no over-/underflow in float32
        got = np.asarray(vf.BlockedMap(tile_chunk=16, data_chunk=64)(psi32, x32, beta, lp))
        assert got.dtype == np.float32 and np.all(np.isfinite(got))
    beta = 0.3 * scale
    got = np.asarray(vf.BlockedMap(tile_chunk=16, data_chunk=64)(psi32, x32, beta, lp))
    np.testing.assert_allclose(got, np_step(psi32, x32, beta, lp), rtol=0, atol=1e-5 * np.abs(x).max())


def test_blocked_map_is_a_static_value():
    B = vf.BlockedMap
    assert B(8, 16) == B(8, 16) and hash(B(8, 16)) == hash(B(8, 16))
    x, psi, lp, _ = random_problem(20, 9, 2, seed=3)
    f = jax.jit(lambda p: vf.BlockedMap(4, 6)(p, jnp.float32(x), jnp.float32(0.5), jnp.float32(lp)))
    np.testing.assert_allclose(np.asarray(f(np.float32(psi))), np_step(psi, x, 0.5, lp), atol=1e-5)


def test_blocked_map_never_holds_the_n_by_k_matrix():
    """Compile-only (no allocation): XLA's temporary buffers of the blocked map
    stay far below one (n, K) float32 array; the dense map needs several."""
    n, K, d = 4000, 4096, 2
    S = jax.ShapeDtypeStruct
    args = (S((K, d), jnp.float32), S((n, d), jnp.float32), S((), jnp.float32), S((K,), jnp.float32))
    temp = lambda f: jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes
    one_matrix = n * K * 4
    assert temp(vf.DenseMap()) >= one_matrix
    assert temp(vf.BlockedMap(tile_chunk=256, data_chunk=512)) < one_matrix / 20


def test_solve_with_blocked_map_equals_solve_float64(x64):
    x = vf.datasets.three_clusters(90)
    grid = vf.LatentGrid.uniform(7)  # K = 49: tile_chunk 10 leaves a block of 9
    betas = np.geomspace(1e-3, 0.3, 6)  # below ~5e-4 the trajectory meets saddles
    # (tiles far from all data, in coincident pairs) where rounding picks the branch
    it = vf.Damped.tight(max_steps=4000)
    a = vf.solve(x, betas, grid, iteration=it, step_map=vf.BlockedMap(tile_chunk=10, data_chunk=32), record_every=50,
                 throw=False)
    b = vf.solve(x, betas, grid, iteration=it, step_map=vf.DenseMap(), record_every=50, throw=False)
    assert a.psi.shape == (6, 49, 2) and a.psi.dtype == np.float64
    np.testing.assert_allclose(np.asarray(a.psi), np.asarray(b.psi), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(a.steps), np.asarray(b.steps))
    np.testing.assert_array_equal(np.asarray(a.converged), np.asarray(b.converged))
    assert a.tol == b.tol
    np.testing.assert_allclose(np.asarray(a.trajectory), np.asarray(b.trajectory), rtol=0, atol=1e-10)


def test_solve_with_blocked_map_equals_numpy_iteration(x64):
    x = vf.datasets.three_clusters(60)
    grid = vf.LatentGrid.uniform(5)
    betas = np.array([2e-3, 0.05])
    res = vf.solve(x, betas, grid, step_map=vf.BlockedMap(tile_chunk=7, data_chunk=25), schedule=vf.Pool(width=1),
                   throw=False)
    psi0 = np.asarray(vf.initial_psi(x, grid))
    for i, beta in enumerate(betas):
        psi, steps, _ = np_solve(x, beta, grid.log_prior, psi0, 0.1, 1e-3, 400)
        assert int(res.steps[i]) == steps
        np.testing.assert_allclose(np.asarray(res.psi[i]), psi, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tile_chunk=0), "tile_chunk must be a positive integer"),
        (dict(tile_chunk=2.5), "tile_chunk must be a positive integer"),
        (dict(data_chunk=True), "data_chunk must be a positive integer"),
        (dict(data_chunk=-3), "data_chunk must be a positive integer"),
    ],
)
def test_chunk_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vf.BlockedMap(**kwargs)


def test_input_errors():
    # The map itself does not validate (it is traced inside solve); solve does, whatever the map.
    x, psi, lp, _ = random_problem(10, 4, 2, seed=0)
    grid = vf.LatentGrid.uniform(2)
    blocked = vf.BlockedMap(tile_chunk=3, data_chunk=4)
    with pytest.raises(ValueError, match="psi0 has 3 data dimensions"):
        vf.solve(x, [0.1], grid, step_map=blocked, psi0=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="betas must be > 0"):
        vf.solve(x, [0.0], grid, step_map=blocked)
    with pytest.raises(ValueError, match="psi0 has 5 tiles but the grid has 4"):
        vf.solve(x, [0.1], grid, step_map=blocked, psi0=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="width must be a positive integer"):
        vf.solve(x, [0.1], grid, step_map=blocked, schedule=vf.Pool(width=0))
    with pytest.raises(ValueError, match="psi0 has 2 rows but betas has 1"):
        vf.solve(x, [0.1], grid, step_map=blocked, psi0=np.zeros((2, 4, 2)))
