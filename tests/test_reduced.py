"""Proposition 5's reduced fixed point (vaefp_jax.phase.reduced) against the full tile model,
Prop. 5's mass equation, and the critical temperature λ_max(C_a) against the measured growth
of the split mode (float64 throughout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax.phase import reduced

pytestmark = pytest.mark.usefixtures("x64")


def _blobs(seed=0, n=40):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal([0.0, 0.0], [0.5, 0.3], (n // 2, 2)),
                           rng.normal([1.6, 0.4], [0.3, 0.6], (n - n // 2, 2))])


def test_fixed_masses_equal_the_tile_model_started_grouped():
    """Tiles started in two coincident groups stay two groups (eq. 15 sees a tile only through
    ψ_b): the tile model's fixed point equals the reduced one with the groups' summed masses."""
    x = _blobs()
    grid = vf.LatentGrid.uniform(2)                     # 4 tiles, π = 1/4 each
    groups = np.array([0, 0, 1, 1])
    start = np.array([[0.1, 0.0], [1.5, 0.5]])
    psi0 = start[groups]
    betas = np.array([0.05, 0.2])
    sol = vf.solve(x, betas, grid, iteration=vf.Damped(0.0, 1e-13, 20_000), psi0=psi0, throw=True)
    masses = np.log(np.array([np.exp(grid.log_prior)[groups == g].sum() for g in (0, 1)]))
    red = reduced.solve_reduced(x, betas, start, masses, free_masses=False, tol=1e-13)
    assert bool(np.all(red.converged))
    for j in range(betas.size):
        np.testing.assert_allclose(np.asarray(sol.psi[j]), np.asarray(red.psi[j])[groups], atol=1e-10, rtol=0)


def test_free_masses_satisfy_proposition_5():
    """Σ_i e^{−H_ia/β} / Σ_b e^{−H_ib/β} γ_b = n at the free-mass fixed point, for each set Ω_a."""
    x = _blobs(1)
    start = np.array([[0.0, 0.0], [1.0, 0.2], [1.8, 0.9]])
    betas = np.array([0.03, 0.1, 0.3])
    red = reduced.solve_reduced(x, betas, start, np.log(np.full(3, 1 / 3)), free_masses=True)
    assert bool(np.all(red.converged))
    for j, beta in enumerate(betas):
        psi, gamma = np.asarray(red.psi[j]), np.exp(np.asarray(red.log_mass[j]))
        kernel = np.exp(-((x[:, None, :] - psi[None]) ** 2).sum(-1) / (2 * beta))      # e^{−H_ia/β}
        lhs = (kernel / (kernel @ gamma)[:, None]).sum(axis=0)
        np.testing.assert_allclose(lhs, x.shape[0], rtol=1e-10)
        assert gamma.sum() == pytest.approx(1.0, abs=1e-12)


def test_one_cluster_splits_at_lambda_max_of_the_covariance():
    x = _blobs(2)
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
    for beta in (0.5 * lam, 2.0 * lam):
        value, v = reduced.critical_temperature(jnp.asarray(x.mean(0))[None], jnp.zeros(1), jnp.asarray(x), beta, 0)
        assert float(value) == pytest.approx(lam, rel=1e-12)
    # above λ_max the collapsed point is the fixed point; below, a split lowers u
    red = reduced.solve_reduced(x, np.array([1.05 * lam, 0.9 * lam]), x.mean(0)[None] + [[1e-3, 0], [-1e-3, 0]],
                                np.log([0.5, 0.5]))
    spread = np.linalg.norm(np.asarray(red.psi)[:, 0] - np.asarray(red.psi)[:, 1], axis=-1)
    assert spread[0] < 1e-5 and spread[1] > 0.1


@pytest.mark.parametrize("beta", [2.0, 1.2, 0.9, 0.7])
def test_split_mode_grows_by_lambda_max_over_beta(beta):
    """Two overlapping blobs on their two-cluster branch; duplicate one cluster into two half-mass
    copies at ψ_a ± εv (v its top eigenvector of C_a): one step of the reduced map multiplies the
    split by λ_max(C_a)/β (the mass update changes nothing to first order)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal([0, 0], [1.0, 0.5], (200, 2)), rng.normal([2.5, 0], [0.6, 1.2], (200, 2))])
    red = reduced.solve_reduced(x, np.array([beta]), np.array([[-0.5, 0.0], [3.0, 0.0]]), np.log([0.5, 0.5]))
    assert bool(red.converged[0])
    psi, lm = np.asarray(red.psi[0]), np.asarray(red.log_mass[0])
    for a in (0, 1):
        lam, v = (np.asarray(t) for t in reduced.critical_temperature(psi, lm, jnp.asarray(x), beta, a))
        eps = 1e-6
        split = np.concatenate([psi, psi[a:a + 1]])
        split[a] += eps * v
        split[-1] -= eps * v
        masses = np.concatenate([lm, lm[a:a + 1]])
        masses[a] = masses[-1] = lm[a] - np.log(2.0)
        new_psi, _ = reduced.reduced_step(jnp.asarray(split), jnp.asarray(masses), jnp.asarray(x), beta)
        gap = np.asarray(new_psi[a] - new_psi[-1])
        np.testing.assert_allclose(gap @ v / (2 * eps), lam / beta, rtol=1e-6)


def test_order_parameter_of_one_cluster_is_the_total_variance():
    x = _blobs(4)
    u = reduced.order_parameter(jnp.asarray(x.mean(0))[None], jnp.zeros(1), jnp.asarray(x), 0.7)
    assert float(u) == pytest.approx(np.trace(np.cov(x.T, bias=True)), rel=1e-12)


# ------------------------------------------------------------------ the split tree (annealing)

from vaefp_jax.phase import annealing  # noqa: E402


def _branch_lambda(x, level, beta):
    """max_a λ_max(C_a) on the level's branch re-solved at ``beta``."""
    r = reduced.solve_reduced(x, np.array([beta]), level.psi, level.log_mass)
    psi, lm = jnp.asarray(r.psi[0]), jnp.asarray(r.log_mass[0])
    return max(float(reduced.critical_temperature(psi, lm, jnp.asarray(x), beta, a)[0]) for a in range(psi.shape[0]))


def test_split_tree_of_two_separated_blobs():
    """The first split at λ_max of the whole set (exactly: one cluster's C is Cov at every β);
    each blob's own split at λ_max of its covariance (the blobs 40 σ apart barely overlap);
    every β_c a root of λ_max(C_a) − β on its branch to 1e-8."""
    rng = np.random.default_rng(5)
    left = rng.normal([0.0, 0.0], [1.0, 0.4], (60, 2))
    right = rng.normal([40.0, 5.0], [0.3, 0.7], (40, 2))
    x = np.concatenate([left, right])
    tree = annealing.anneal(x, max_clusters=6)
    lam = lambda a: np.linalg.eigvalsh(np.cov(a.T, bias=True)).max()
    assert [len(lev.nodes) for lev in tree.levels] == [1, 2, 3, 4, 5, 6]
    assert tree.splits[0].beta == pytest.approx(lam(x), rel=1e-10)
    assert sum(tree.splits[0].masses) == pytest.approx(1.0)
    np.testing.assert_allclose(np.sort(np.exp(tree.levels[1].log_mass)), [0.4, 0.6], atol=1e-9)   # at its low end
    labels = tree.labels_at(1)   # the two blobs
    assert len(set(labels[:60])) == 1 and len(set(labels[60:])) == 1 and labels[0] != labels[-1]
    own = {s.parent: s.beta for s in tree.splits}
    nodes = sorted(tree.levels[1].nodes)
    assert own[nodes[labels[0]]] == pytest.approx(lam(left), rel=1e-6)
    assert own[nodes[labels[-1]]] == pytest.approx(lam(right), rel=1e-6)
    for k in range(1, 5):   # the split that ends level k, on level k's branch
        beta_c = tree.splits[k].beta
        assert _branch_lambda(x, tree.levels[k], beta_c) == pytest.approx(beta_c, rel=1e-8)


def test_second_split_against_a_brute_force_scan():
    """On overlapping data the second split is where ρ = max_a λ_max(C_a)/β first reaches 1 on a
    fine grid of the two-cluster branch, cooled step by step."""
    x = _blobs(6, n=80)
    tree = annealing.anneal(x, max_clusters=3)
    beta_c = tree.splits[1].beta
    grid = np.geomspace(tree.splits[0].beta * 0.95, beta_c * 0.9, 400)
    state = (tree.levels[1].psi, tree.levels[1].log_mass)
    first = None
    for beta in grid[grid > beta_c * 1.02]:   # warm the branch down to just above the split
        r = reduced.solve_reduced(x, np.array([beta]), *state)
        state = (np.asarray(r.psi[0]), np.asarray(r.log_mass[0]))
    for beta in grid[grid <= beta_c * 1.02]:
        r = reduced.solve_reduced(x, np.array([beta]), *state)
        state = (np.asarray(r.psi[0]), np.asarray(r.log_mass[0]))
        rho = max(float(reduced.critical_temperature(jnp.asarray(state[0]), jnp.asarray(state[1]), jnp.asarray(x),
                                                     beta, a)[0]) for a in range(2)) / beta
        if rho >= 1:
            first = beta
            break
    spacing = grid[0] / grid[1]
    assert first is not None and beta_c / spacing <= first <= beta_c


# ------------------------------------------------------------------ solver variants


def test_squarem_blocked_and_plain_reach_the_same_fixed_point():
    """SQUAREM extrapolation and the blocked sums change the path, not the fixed point: against
    plain EM steps on one block (float64, tol 1e-13 × spread; agreement to 1e-9 absolute)."""
    x = _blobs(7, n=90)
    start = np.array([[0.0, 0.0], [1.0, 0.2], [1.8, 0.9]])
    lm0 = np.log(np.full(3, 1 / 3))
    betas = np.array([0.05, 0.2])
    tol = 1e-13 * np.sqrt(np.var(x, axis=0).sum())
    plain = reduced.solve_reduced(x, betas, start, lm0, accelerate=False, chunk=None, tol=tol, max_steps=400_000)
    fast = reduced.solve_reduced(x, betas, start, lm0, accelerate=True, chunk=32, tol=tol)
    assert bool(np.all(plain.converged)) and bool(np.all(fast.converged))
    np.testing.assert_allclose(np.asarray(fast.psi), np.asarray(plain.psi), atol=1e-9, rtol=0)
    np.testing.assert_allclose(np.exp(np.asarray(fast.log_mass)), np.exp(np.asarray(plain.log_mass)), atol=1e-9)
    assert int(fast.steps.sum()) < int(plain.steps.sum())


@pytest.mark.parametrize("n, chunk", [(96, 32), (97, 32), (100, 7)], ids=["even", "remainder-1", "remainder-2"])
def test_blocked_step_equals_one_block(n, chunk):
    """The blocked sums (equal blocks read in place, then the remaining points) give the same
    step and log likelihood as one block, whether or not the blocks divide n (float64, 1e-12)."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3)) * np.array([1.0, 2.0, 0.5])
    x -= x.mean(0)
    psi = x[:4] * 0.7
    lm = np.log([0.1, 0.2, 0.3, 0.4])
    args = (jnp.asarray(psi), jnp.asarray(lm), jnp.asarray(x), 0.8)
    one = (*reduced.reduced_step(*args, chunk=None), reduced.log_likelihood(*args, chunk=None))
    blocked = (*reduced.reduced_step(*args, chunk=chunk), reduced.log_likelihood(*args, chunk=chunk))
    for a, b in zip(one, blocked):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)


def test_lanczos_spectra_equal_the_dense_ones():
    """λ_max(C_a) and its direction from Lanczos on the product C_a v equal eigh of C_a (d = 12)."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(150, 12)) * np.linspace(0.5, 2.0, 12)
    x -= x.mean(0)
    psi = np.stack([x[:70].mean(0), x[70:].mean(0)])
    lm = np.log([0.5, 0.5])
    lam_d, v_d = (np.asarray(t) for t in reduced.cluster_spectra(psi, lm, x, 3.0))
    lam_l, v_l = (np.asarray(t) for t in reduced.cluster_spectra(psi, lm, x, 3.0, v0=np.ones((2, 12)), iters=12))
    np.testing.assert_allclose(lam_l, lam_d, rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(v_l * v_d, axis=1)), 1.0, atol=1e-10)


def test_float32_tree_matches_float64():
    """The annealing in float32 (JAX x64 on, data float32) finds the first splits of the float64
    run to float32 accuracy."""
    x = _blobs(9, n=60)
    t64 = annealing.anneal(x, max_clusters=3)
    t32 = annealing.anneal(x.astype(np.float32), max_clusters=3)
    for a, b in zip(t64.splits, t32.splits):
        assert b.beta == pytest.approx(a.beta, rel=1e-4)


# ------------------------------------------------------------------ the analysis and its result


def test_split_analysis_levels_labels_and_round_trip(tmp_path):
    """Three separated blobs: the level with three significant clusters recovers them (ARI 1),
    labels nest across levels (every cluster of a finer level inside one of the coarser), the
    number of clusters never increases with β, the linkage's heights are the exact β_c, and
    save/load round-trips."""
    rng = np.random.default_rng(10)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = np.concatenate([rng.normal(c, 0.5, (30, 2)) for c in centres])
    y = np.repeat(np.arange(3), 30)
    res = vf.split_analysis(x, true_labels=y, max_clusters=6, cross_check=3)
    score = res.score()
    assert score["significant"] == 3 and score["ari"] == pytest.approx(1.0)
    for k in range(len(res.levels) - 1):
        coarse, fine = res.labels(k), res.labels(k + 1)
        assert all(len(set(coarse[fine == c])) == 1 for c in np.unique(fine))
    assert np.all(np.diff(res.tree.counts) <= 0)                       # ascending β: never more clusters
    assert [lev.clusters for lev in res.levels] == list(range(1, len(res.levels) + 1))
    assert all(s.exact for s in res.splits)
    assert len(res.tree.merges) >= 2   # a split whose child holds no point merges nothing
    for m in res.tree.merges:
        assert min(abs(m.height - s.beta_c) for s in res.splits) <= 1e-12 * m.height
    assert np.all(np.isfinite(res.sweep_u)) and res.sweep_beta.size == 3 * len(res.levels)
    # dβ_c/dx of the first split: the closed form (2/n)((x_i − x̄)·v) v of β_c = λ_max(Cov)
    evals, evecs = np.linalg.eigh(np.cov(x.T, bias=True))
    v = evecs[:, -1]
    closed = (2.0 / x.shape[0]) * ((x - x.mean(0)) @ v)[:, None] * v[None, :]
    np.testing.assert_allclose(res.beta_c_gradient(0), closed, atol=1e-10 * np.abs(closed).max())
    res.save(tmp_path / "run", figures=False)
    back = vf.load(tmp_path / "run")
    assert back.splits == res.splits and back.levels == res.levels and back.score() == res.score()
    np.testing.assert_array_equal(back.tree.labels, res.tree.labels)


def test_cuda_lowering_of_the_reduced_solve_states_highest():
    """The reduced solve lowered for CUDA (no GPU needed): every product at HIGHEST precision."""
    import re

    x = jnp.asarray(_blobs(11, n=20), jnp.float32)
    f = lambda x: reduced.solve_reduced(x, np.array([0.1, 0.2], np.float32), np.zeros((2, 2), np.float32),
                                        np.zeros(2, np.float32), tol=1e-5).psi
    text = jax.jit(f).trace(x).lower(lowering_platforms=("cuda",)).as_text()
    lines = [line for line in text.splitlines() if "dot_general" in line]
    assert lines and all(re.search(r"HIGHEST", line) for line in lines), lines
    plain = jax.jit(lambda a: a @ a.T).trace(x).lower(lowering_platforms=("cuda",)).as_text()
    assert not any("HIGHEST" in line for line in plain.splitlines() if "dot_general" in line)   # the check can fail
