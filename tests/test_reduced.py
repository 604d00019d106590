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
