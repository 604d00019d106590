import jax
import numpy as np
import pytest

import vaefp_jax as vf


@pytest.fixture
def x64():
    """Run the test body with JAX float64 enabled, restored afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def keep_x64_setting():
    """The commands switch JAX to float64 in their process; later tests must not inherit it."""
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


def np_step(psi, x, beta, log_prior):
    """Eq. (14)–(15) in plain NumPy float64, written from the paper's formulas
    (with a max-shift so that exp does not underflow at small β)."""
    psi, x = np.asarray(psi, np.float64), np.asarray(x, np.float64)
    lp = np.asarray(log_prior, np.float64)
    sq = ((x[:, None, :] - psi[None, :, :]) ** 2).sum(-1)          # (n, K)
    a = -sq / (2 * beta)
    # c_i = Σ_b exp(a_ib) π_b, kept as log c_i
    amax = (a + lp).max(axis=1, keepdims=True)
    log_c = amax + np.log(np.exp(a + lp - amax).sum(axis=1, keepdims=True))
    log_m = a - log_c                                              # m_ib = e^{a_ib}/c_i
    # ψ_b = Σ_i x_i m_ib / Σ_j m_jb
    mmax = log_m.max(axis=0, keepdims=True)
    m = np.exp(log_m - mmax)
    return (m.T @ x) / m.sum(axis=0)[:, None]


def np_order_parameter(psi, x, beta, log_prior):
    """u = (1/n) Σ_i Σ_a m_ia π_a ‖x_i − ψ_a‖² in NumPy float64."""
    psi, x = np.asarray(psi, np.float64), np.asarray(x, np.float64)
    lp = np.asarray(log_prior, np.float64)
    sq = ((x[:, None, :] - psi[None, :, :]) ** 2).sum(-1)
    a = -sq / (2 * beta) + lp
    a = a - a.max(axis=1, keepdims=True)
    q = np.exp(a)
    q /= q.sum(axis=1, keepdims=True)
    return float((q * sq).sum(axis=1).mean())


def np_solve(x, beta, log_prior, psi0, damping, tol, max_steps):
    """Damped iteration in NumPy float64: (psi, steps, residual)."""
    psi = np.asarray(psi0, np.float64)
    res = np.inf
    for t in range(1, max_steps + 1):
        new = (1 - damping) * np_step(psi, x, beta, log_prior) + damping * psi
        res = np.sqrt(((new - psi) ** 2).sum())
        psi = new
        if res < tol:
            return psi, t, res
    return psi, max_steps, res


def random_problem(n, K, d, seed, dead_tiles=()):
    """Random x (n, d), ψ near data points (K, d), a random prior with some
    zero-mass tiles, and the median squared distance (the β scale)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    psi = x[rng.integers(0, n, K)] + 0.3 * rng.normal(size=(K, d))
    lp = rng.normal(size=K)
    lp[list(dead_tiles)] = -np.inf
    lp -= np.log(np.exp(lp).sum())
    scale = float(np.median(((x[:, None] - psi[None]) ** 2).sum(-1)))
    return x, psi, lp, scale


def assert_map_equals_step(map_fn, n, K, d, dead, beta_scale):
    """``map_fn(psi, x, beta, log_prior)`` on a random float64 problem equals
    ``vf.step`` and the NumPy map: the same formulas with the sums reassociated,
    so agreement to a few ulps of |x| ≤ ~5 (1e-12)."""
    x, psi, lp, scale = random_problem(n, K, d, seed=n * K + d, dead_tiles=dead)
    beta = beta_scale * scale
    got = np.asarray(map_fn(psi, x, beta, lp))
    assert got.dtype == np.float64 and got.shape == (K, d)
    np.testing.assert_allclose(got, np.asarray(vf.step(psi, x, beta, lp)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, np_step(psi, x, beta, lp), rtol=0, atol=1e-12)
