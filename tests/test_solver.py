"""The batched solver: masking, iteration presets, closed forms, flags."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_order_parameter, np_solve, np_step

import vaefp_jax as vf


@pytest.fixture(scope="module")
def small():
    x = vf.datasets.three_clusters(30, seed=1)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 0.3, 7)
    return x, grid, betas


def test_batched_equals_each_beta_alone(small, x64):
    x, grid, betas = small
    it = vf.Damped(damping=0.1, tol=1e-9, max_steps=3000)
    batched = vf.solve(x, betas, grid, iteration=it, throw=False)
    for j, b in enumerate(betas):
        alone = vf.solve(x, np.array([b]), grid, iteration=it, throw=False)
        # The other problems of the batch (pool slots) must neither move nor count.
        assert int(batched.steps[j]) == int(alone.steps[0])
        np.testing.assert_allclose(batched.psi[j], alone.psi[0], rtol=0, atol=1e-13)
        assert bool(batched.converged[j]) == bool(alone.converged[0])


def test_batch_size_does_not_change_results(small, x64):
    x, grid, betas = small
    ref = vf.solve(x, betas, grid, schedule=vf.Pool(width=len(betas)), throw=False)
    for bs in (1, 3):
        out = vf.solve(x, betas, grid, schedule=vf.Pool(width=bs), throw=False)
        np.testing.assert_array_equal(out.steps, ref.steps)
        np.testing.assert_allclose(out.psi, ref.psi, rtol=0, atol=1e-13)


def test_matches_numpy_damped_iteration(small, x64):
    x, grid, betas = small
    psi0 = np.asarray(vf.initial_psi(jnp.asarray(x), grid, 0.1))
    out = vf.solve(x, betas, grid, iteration=vf.Damped.paper(), throw=False)
    for j, b in enumerate(betas):
        psi, steps, res = np_solve(x, b, grid.log_prior, psi0, 0.1, 1e-3, 400)
        assert int(out.steps[j]) == steps
        np.testing.assert_allclose(out.psi[j], psi, rtol=0, atol=1e-10)
        np.testing.assert_allclose(float(out.residual[j]), res, rtol=1e-8)


def test_paper_iteration_fields():
    p = vf.Damped.paper()
    assert (p.damping, p.tol, p.max_steps, p.init_noise) == (pytest.approx(0.1), 1e-3, 400, 0.1)
    assert vf.Damped.paper(alpha_on_old=True).damping == pytest.approx(0.9)


def test_initial_psi_is_centres_plus_bounded_noise_and_seeded():
    grid = vf.LatentGrid.uniform(8)
    x = vf.datasets.three_clusters(20)
    a = np.asarray(vf.initial_psi(x, grid, 0.1, jax.random.PRNGKey(3)))
    b = np.asarray(vf.initial_psi(x, grid, 0.1, jax.random.PRNGKey(3)))
    c = np.asarray(vf.initial_psi(x, grid, 0.1, jax.random.PRNGKey(4)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    dev = a - grid.z
    assert np.all(np.abs(dev) <= 0.1 + 1e-6) and np.abs(dev).max() > 0.05


def test_initial_psi_other_data_dimension_spans_principal_subspace():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 5)) * np.array([3.0, 1.0, 0.1, 0.1, 0.1])
    grid = vf.LatentGrid.uniform(5)
    psi0 = np.asarray(vf.initial_psi(x, grid, 0.0))
    assert psi0.shape == (25, 5)
    # With no noise the grid lies in the mean + top-2 principal plane.
    centred = psi0 - x.mean(0)
    assert np.abs(centred[:, 2:]).max() < 0.3 * np.abs(centred[:, :2]).max()


def test_collapse_above_lambda_max(x64):
    # For β > λ_max(Cov) the only stable fixed point is ψ_a = mean for all a,
    # and u = tr(Cov) (closed form). 1.5·λ_max keeps the contraction λ_max/β ≤ 2/3.
    x = vf.datasets.gaussian_blob(80, seed=2)
    cov = np.cov(x.T, bias=True)
    lam = np.linalg.eigvalsh(cov)[-1]
    betas = np.array([1.5, 2.0, 5.0]) * lam
    grid = vf.LatentGrid.uniform(6)
    out = vf.solve(x, betas, grid, iteration=vf.Damped.tight())
    assert np.all(out.converged)
    np.testing.assert_allclose(out.psi, np.broadcast_to(x.mean(0), out.psi.shape), atol=1e-8)
    for j, b in enumerate(betas):
        u = float(vf.order_parameter(out.psi[j], x, b, grid.log_prior))
        assert u == pytest.approx(np.trace(cov), rel=1e-10)


def test_proposition_2_partition_is_a_fixed_point(x64):
    # ψ set to the data points on a partition of the tiles, β small against the
    # squared distances: the update maps it to itself up to e^{-min d²/2β}.
    rng = np.random.default_rng(0)
    x = np.array([[-0.3, -0.3], [0.3, -0.2], [0.0, 0.35], [-0.25, 0.2]])
    grid = vf.LatentGrid.uniform(4)
    owner = rng.integers(0, len(x), grid.num_tiles)
    owner[: len(x)] = np.arange(len(x))  # every point owns at least one tile
    psi = x[owner]
    beta = 1e-3  # min squared distance 0.1 → overlap e^{-50}
    out = np.asarray(vf.step(psi, x, beta, grid.log_prior))
    np.testing.assert_allclose(out, psi, atol=1e-15)
    np.testing.assert_allclose(np_step(psi, x, beta, grid.log_prior), psi, atol=1e-15)
    assert vf.order_parameter(psi, x, beta, grid.log_prior) < 1e-15


def test_nonconvergence_is_reported_per_beta(small):
    x, grid, betas = small
    with pytest.warns(RuntimeWarning, match="did not converge"):
        out = vf.solve(x, betas, grid, iteration=vf.Damped(damping=0.9, tol=1e-6, max_steps=3))
    assert out.converged.shape == betas.shape
    assert not np.any(out.converged)
    np.testing.assert_array_equal(out.steps, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vf.solve(x, betas[-2:], grid, iteration=vf.Damped.paper())  # converges: no warning


def test_warm_start_shapes(small):
    x, grid, betas = small
    first = vf.solve(x, betas, grid, throw=False)
    warm = vf.solve(x, betas, grid, psi0=first.psi, throw=False)
    # Starting at a converged point the first step is already below tol.
    assert np.all(np.asarray(warm.steps) <= 2)
    shared = vf.solve(x, betas, grid, psi0=grid.z, iteration=vf.Damped.paper(), throw=False)
    assert shared.psi.shape == (len(betas), grid.num_tiles, 2)
    with pytest.raises(ValueError, match="rows"):
        vf.solve(x, betas, grid, psi0=first.psi[:2])
    with pytest.raises(ValueError, match="tiles"):
        vf.solve(x, betas, grid, psi0=np.zeros((5, 2)))


def test_trajectories_record_the_iterates(small, x64):
    x, grid, betas = small
    b = betas[:2]
    it = vf.Damped(damping=0.1, tol=1e-3, max_steps=20)
    out = vf.solve(x, b, grid, record_every=2, throw=False, iteration=it)
    plain = vf.solve(x, b, grid, throw=False, iteration=it)
    assert out.trajectory.shape == (2, 11, grid.num_tiles, 2)
    np.testing.assert_allclose(out.psi, plain.psi, atol=1e-14)
    psi = np.asarray(vf.initial_psi(jnp.asarray(x), grid, 0.1))
    np.testing.assert_allclose(out.trajectory[0, 0], psi, atol=1e-14)
    for t in range(1, 5):  # manual damped steps
        psi = 0.9 * np_step(psi, x, b[0], grid.log_prior) + 0.1 * psi
        if t % 2 == 0:
            np.testing.assert_allclose(out.trajectory[0, t // 2], psi, atol=1e-12)
    # entries after the stop repeat the final ψ
    last = int(out.steps[0]) // 2
    np.testing.assert_allclose(out.trajectory[0, last:], np.broadcast_to(out.psi[0], out.trajectory[0, last:].shape),
                               atol=1e-14)


def test_solve_under_jit_and_vmap(small, x64):
    # float64: in float32 a different fusion under vmap changes the rounding,
    # which near a transition can tip an iterate into another basin.
    x, grid, betas = small
    ref = vf.solve(x, betas, grid, throw=False)
    jitted = jax.jit(lambda b: vf.solve(x, b, grid, throw=False).psi)(jnp.asarray(betas))
    np.testing.assert_allclose(jitted, ref.psi, atol=1e-10)
    xs = jnp.stack([jnp.asarray(x), jnp.asarray(x[::-1])])
    many = jax.vmap(lambda xx: vf.solve(xx, betas, grid, throw=False).psi)(xs)
    np.testing.assert_allclose(many[0], ref.psi, atol=1e-10)
    rev = vf.solve(jnp.asarray(x[::-1]), betas, grid, throw=False)
    np.testing.assert_allclose(many[1], rev.psi, atol=1e-10)


def test_order_parameter_of_solution_matches_numpy(small, x64):
    x, grid, betas = small
    out = vf.solve(x, betas, grid, iteration=vf.Damped.tight())
    for j, b in enumerate(betas):
        u = float(vf.order_parameter(out.psi[j], x, b, grid.log_prior))
        assert u == pytest.approx(np_order_parameter(out.psi[j], x, b, grid.log_prior), rel=1e-12)


def test_default_batch_size_cpu_and_memory_cap():
    from vaefp_jax.engine.schedules import DENSE_COPIES, default_batch_size

    assert default_batch_size(64, backend="cpu") == 8
    assert default_batch_size(3, backend="cpu") == 3
    assert default_batch_size(1024, backend="gpu") == 1024  # no sizes: no cap
    # n = 1e4, K = 128², float32 on an 80 GB device: half the memory / (3 (n, K) arrays per lane)
    per_lane = DENSE_COPIES * 10_000 * 16_384 * 4
    lanes = default_batch_size(1024, 10_000, 16_384, 4, backend="gpu", memory_bytes=80e9)
    assert lanes == int(40e9 // per_lane) == 20
    assert default_batch_size(5, 10_000, 16_384, 4, backend="gpu", memory_bytes=80e9) == 5
    assert default_batch_size(1024, 10_000, 16_384, 8, backend="gpu", memory_bytes=80e9) == 10
    assert default_batch_size(1024, 10**6, 10**6, 4, backend="gpu", memory_bytes=80e9) == 1  # never 0


def test_cpu_defaults_follow_the_cache():
    """CPU lanes shrink when their (n, K) intermediates would leave the cache, and
    large-n problems get the blocked map (measured choices, RESULTS.md)."""
    from vaefp_jax.engine.schedules import CPU_CACHE_BYTES, DENSE_COPIES, default_batch_size
    from vaefp_jax.maps import default_step_map

    assert default_batch_size(64, 120, 64, 4, backend="cpu") == 8           # 8 × 8 tiles
    assert default_batch_size(64, 120, 256, 4, backend="cpu") == CPU_CACHE_BYTES // (DENSE_COPIES * 120 * 256 * 4)
    assert default_batch_size(64, 120, 1024, 4, backend="cpu") == 1         # the paper's size
    assert default_batch_size(64, 120, 16_384, 4, backend="cpu") == 1       # never 0
    assert default_batch_size(64, 1024, 1024, 4, backend="cpu") == 1        # one 1024 × 1024 block
    gb = 2**30
    # the dense map while its 3 (n, K) arrays (2 GB here) take at most an eighth of the memory
    assert default_step_map(10_000, 16_384, 2, backend="cpu", memory_bytes=16 * gb) == vf.DenseMap()
    assert default_step_map(10_000, 16_384, 2, backend="cpu", memory_bytes=14 * gb) == vf.BlockedMap(1024, 1024)
    assert default_step_map(10_000, 16_384, 2, backend="cpu", itemsize=8, memory_bytes=16 * gb) == vf.BlockedMap()
    assert default_step_map(10_000, 16_384, 784, backend="cpu", memory_bytes=gb) == vf.DenseMap()  # d > 64
    assert default_step_map(10_000, 16_384, 2, backend="gpu", memory_bytes=gb) == vf.DenseMap()
    assert default_step_map(120, 1024, 2, backend="cpu") == vf.DenseMap()   # this machine's RAM


def _resolved(setup):
    """The step map and the schedule (with its width) that ``solve`` runs for a prepared problem."""
    return setup.step_map, setup.schedule.resolved(setup.num, setup.lane_shape, setup.itemsize)


def test_solve_large_n_blocked_map_equals_dense():
    """n = 4096, K = 2116 on CPU: the blocked map (one lane, as solve runs it where the
    dense arrays would not fit) gives the dense map's iterates (three steps, float32;
    rounding of reassociated sums only); solve's default is default_step_map's choice."""
    from vaefp_jax.engine.solve import prepare
    from vaefp_jax.maps import default_step_map

    rng = np.random.default_rng(0)
    x = np.float32(rng.normal(size=(4096, 2)))
    grid = vf.LatentGrid.uniform(46)  # K = 2116
    betas = np.array([0.01, 0.3])
    if jax.default_backend() == "cpu":
        # a one-slot pool is one β after another: Vmapped(batch_size=1)
        assert _resolved(prepare(x, betas, grid)) == (default_step_map(4096, 2116, 2), vf.Vmapped(batch_size=1))
    it = dataclasses.replace(vf.Damped.paper(), max_steps=3)
    auto = vf.solve(x, betas, grid, iteration=it, step_map=vf.BlockedMap(), throw=False)
    dense = vf.solve(x, betas, grid, iteration=it, step_map=vf.DenseMap(), throw=False)
    np.testing.assert_array_equal(np.asarray(auto.steps), [3, 3])
    np.testing.assert_allclose(np.asarray(auto.psi), np.asarray(dense.psi), rtol=0, atol=2e-5)


@pytest.mark.parametrize("map_name", ["blocked", "dense"])
def test_plans_for_the_largest_problem(map_name):
    """Compile-only (nothing allocated): solve's loop for n = 10⁴ points on 128 × 128
    tiles and 64 β, one lane. The blocked map plans < 64 MB of scratch on CPU, where one
    (n, K) float32 array alone is 655 MB; the dense map at most the DENSE_COPIES arrays
    that default_step_map's memory rule assumes (plus 64 MB)."""
    from vaefp_jax.engine.core import solve_core
    from vaefp_jax.engine.schedules import DENSE_COPIES
    from vaefp_jax.engine.solve import prepare

    S, f32 = jax.ShapeDtypeStruct, jnp.float32
    n, K, d, B = 10_000, 16_384, 2, 64
    step_map = vf.BlockedMap() if map_name == "blocked" else vf.DenseMap()
    setup = prepare(np.zeros((n, d), np.float32), np.ones(B), vf.LatentGrid.uniform(128), step_map=step_map)
    step_map, schedule = _resolved(setup)
    args = (S((n, d), f32), S((K,), f32), {}, {"beta": S((B,), f32)}, S((K, d), f32), S((2,), jnp.uint32))
    plan = solve_core.lower(*args, iteration=setup.iteration, step_map=step_map,
                            constraint=setup.constraint.static(), schedule=schedule).compile().memory_analysis()
    if map_name == "blocked":
        assert plan.temp_size_in_bytes < 64 * 2**20 < n * K * 4
    else:
        assert plan.temp_size_in_bytes < DENSE_COPIES * n * K * 4 + 64 * 2**20
