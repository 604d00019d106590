"""vaefp_jax.equations: the map of eq. (14)–(15) and the order parameter against NumPy float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_order_parameter, np_step

import vaefp_jax as vf

BETAS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


def _problem(seed, n=30, K=25, d=2):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, (n, d))
    psi = rng.uniform(-0.5, 0.5, (K, d))
    lp = rng.normal(size=K)
    lp = lp - np.log(np.exp(lp).sum())  # non-uniform prior
    return x, psi, lp


def _rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("d", [2, 12])
def test_step_float32(beta, d):
    # The reference gets the same float32-rounded inputs. What float32 cannot
    # avoid is the rounding of the logits ‖x−ψ‖²/2β: an absolute error of
    # eps32·‖x−ψ‖²/2β in a log-weight. On the paper's 2-D data (‖x−ψ‖² ≲ 0.3)
    # that stays below 1e-5 relative in ψ for every β; in d = 12 (‖x−ψ‖² ~ 2)
    # at β = 1e-4 it is ~6e-4 in the log-weights of near-tied points, so we
    # allow 1e-4 there (observed ≤ 3e-5).
    x, psi, lp = _problem(0, d=d)
    x32, psi32, lp32 = (a.astype(np.float32) for a in (x, psi, lp))
    ref = np_step(psi32, x32, np.float32(beta), lp32)
    out = vf.step(psi32, x32, np.float32(beta), lp32)
    assert out.dtype == jnp.float32
    assert _rel(out, ref) <= (1e-4 if (d > 2 and beta < 1e-3) else 1e-5)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("d", [2, 12, 100])
def test_step_float64(beta, d, x64):
    x, psi, lp = _problem(1, d=d)
    ref = np_step(psi, x, beta, lp)
    out = vf.step(jnp.asarray(psi), jnp.asarray(x), beta, jnp.asarray(lp))
    assert out.dtype == jnp.float64
    # d = 100 uses the matrix-product distances, exact to ~d·eps·‖x‖² ≈ 1e-13
    # absolute; at β = 1e-4 that is ~1e-9 in the logits, hence in the weights.
    assert _rel(out, ref) <= (1e-12 if d <= 64 else 1e-8)


@pytest.mark.parametrize("beta", BETAS)
def test_order_parameter_float32(beta):
    x, psi, lp = _problem(2)
    x32, psi32, lp32 = (a.astype(np.float32) for a in (x, psi, lp))
    ref = np_order_parameter(psi32, x32, np.float32(beta), lp32)
    out = float(vf.order_parameter(psi32, x32, np.float32(beta), lp32))
    assert abs(out - ref) <= 1e-5 * abs(ref)


@pytest.mark.parametrize("beta", BETAS)
def test_order_parameter_float64(beta, x64):
    x, psi, lp = _problem(3)
    ref = np_order_parameter(psi, x, beta, lp)
    out = float(vf.order_parameter(jnp.asarray(psi), jnp.asarray(x), beta, jnp.asarray(lp)))
    assert abs(out - ref) <= 1e-12 * abs(ref)


@pytest.mark.parametrize("beta", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_extreme_beta_is_finite_float32(beta):
    # Tiles far from every data point: the naive exp underflows to 0/0 at small β.
    x, psi, lp = _problem(4)
    psi = psi * 20.0
    out = vf.step(psi.astype(np.float32), x.astype(np.float32), np.float32(beta), lp.astype(np.float32))
    u = vf.order_parameter(psi.astype(np.float32), x.astype(np.float32), np.float32(beta), lp.astype(np.float32))
    f = vf.free_energy(psi.astype(np.float32), x.astype(np.float32), np.float32(beta), lp.astype(np.float32))
    assert np.all(np.isfinite(np.asarray(out))) and np.isfinite(float(u)) and np.isfinite(float(f))


def test_tile_posterior_rows_sum_to_one_and_match_m_times_prior():
    x, psi, lp = _problem(5)
    q = np.asarray(vf.tile_posterior(psi, x, 0.05, lp), np.float64)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    m = np.exp(np.asarray(vf.log_m(psi, x, 0.05, lp), np.float64))
    np.testing.assert_allclose(m * np.exp(lp)[None, :], q, rtol=1e-4, atol=1e-7)
    # Σ_a m_ia π_a = 1 (the constraint of Proposition 4)
    np.testing.assert_allclose((m * np.exp(lp)).sum(axis=1), 1.0, atol=1e-5)


def test_free_energy_decreases_along_undamped_iteration(x64):
    # (14)–(15) is coordinate descent on the β-free-energy.
    x, psi, lp = _problem(6)
    beta = 0.01
    f = [float(vf.free_energy(psi, x, beta, lp))]
    for _ in range(30):
        psi = np.asarray(vf.step(psi, x, beta, lp))
        f.append(float(vf.free_energy(psi, x, beta, lp)))
    assert np.all(np.diff(f) <= 1e-14)
    assert f[-1] < f[0]


def test_step_and_free_energy_share_one_evaluation(x64):
    # One evaluation gives F and f (MapValue.free_energy) against the NumPy step and
    # f = −β mean_i log c_i written out here.
    x, psi, lp = _problem(6)
    for beta in (1e-3, 0.05, 3.0):
        value = vf.equations.evaluate(jnp.asarray(psi), jnp.asarray(x), beta, jnp.asarray(lp))
        F, f = value.psi, value.free_energy(beta)
        np.testing.assert_allclose(F, np_step(psi, x, beta, lp), rtol=1e-12, atol=1e-12)
        a = -((x[:, None, :] - psi[None, :, :]) ** 2).sum(-1) / (2 * beta) + lp
        amax = a.max(axis=1, keepdims=True)
        log_c = amax[:, 0] + np.log(np.exp(a - amax).sum(axis=1))
        np.testing.assert_allclose(float(f), -beta * log_c.mean(), rtol=1e-12)


def test_functions_work_under_jit_and_vmap():
    x, psi, lp = (a.astype(np.float32) for a in _problem(7))
    betas = np.array([0.01, 0.1, 1.0], np.float32)
    batched = jax.jit(jax.vmap(vf.step, in_axes=(None, None, 0, None)))(psi, x, betas, lp)
    u = jax.jit(jax.vmap(vf.order_parameter, in_axes=(None, None, 0, None)))(psi, x, betas, lp)
    for j, b in enumerate(betas):
        np.testing.assert_allclose(batched[j], vf.step(psi, x, b, lp), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(u[j], vf.order_parameter(psi, x, b, lp), rtol=1e-6)
