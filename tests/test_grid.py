"""Latent grids: masses, centres, bounds."""

import math

import numpy as np
import pytest
from scipy import stats

import vaefp_jax as vf


def test_uniform_grid_matches_appendix_a():
    g = vf.LatentGrid.uniform(32)
    assert g.num_tiles == 1024 and g.dim == 2
    assert g.width == pytest.approx(1 / 32)
    np.testing.assert_allclose(g.prior, 1 / 1024)
    # centres of a 32×32 grid on [−½, ½]², last coordinate fastest
    assert np.allclose(g.z[0], [-0.5 + 1 / 64, -0.5 + 1 / 64])
    assert np.allclose(g.z[1], [-0.5 + 1 / 64, -0.5 + 3 / 64])
    assert np.allclose(g.upper - g.lower, 1 / 32)
    np.testing.assert_allclose(0.5 * (g.lower + g.upper), g.z)


def test_gaussian_grid_masses_and_means_against_scipy():
    k, limit = 6, 2.0
    g = vf.LatentGrid.gaussian(k, limit=limit)
    assert g.prior.sum() == pytest.approx(1.0, abs=1e-14)
    edges = np.linspace(-limit, limit, k + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    m1 = np.diff(stats.norm.cdf(edges))
    mean1 = np.array([stats.truncnorm(a, b).mean() for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(g.prior.reshape(k, k), np.outer(m1, m1), rtol=1e-12)
    np.testing.assert_allclose(g.z[:, 0].reshape(k, k), mean1[:, None] * np.ones(k), rtol=1e-10)
    np.testing.assert_allclose(g.z[:, 1].reshape(k, k), np.ones(k)[:, None] * mean1, rtol=1e-10)
    assert np.isinf(g.lower[0]).all() and np.isinf(g.upper[-1]).all()
    assert g.width == pytest.approx(2 * limit / k)


def test_three_dimensional_grid():
    g = vf.LatentGrid.uniform(3, dim=3)
    assert g.z.shape == (27, 3) and g.prior.sum() == pytest.approx(1.0)
    g2 = vf.LatentGrid.gaussian(3, dim=3)
    assert g2.prior.sum() == pytest.approx(1.0) and math.isfinite(g2.z.max())
