"""Tiling metrics on encoders whose answers are known exactly."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaefp_jax.vae.tiling import TilingMetrics, tiling_metrics

N = 4
X = np.eye(N, dtype=np.float32)  # exemplar i is the one-hot vector e_i
M = 20_000  # prior samples
S = 500     # posterior samples per exemplar


def _log_prior(z):
    return -0.5 * jnp.sum(z**2, axis=-1) - jnp.log(2 * jnp.pi)


def _quadrant(z):
    """0: z₁ ≥ 0, z₂ ≥ 0; 1: z₁ < 0, z₂ ≥ 0; 2: z₁ ≥ 0, z₂ < 0; 3: both < 0."""
    return (z[..., 0] < 0).astype(jnp.int32) + 2 * (z[..., 1] < 0).astype(jnp.int32)


def quadrant_log_q(z, x):
    """Prop. 2's optimum for n = 4: q(z|x_i) = π(z) 1[z ∈ quadrant i] / (1/4)."""
    i = jnp.argmax(x)
    return jnp.where(_quadrant(z) == i, _log_prior(z) + jnp.log(4.0), -jnp.inf)


def quadrant_sample(key, x, num):
    i = int(jnp.argmax(x))
    eps = jnp.abs(jax.random.normal(key, (num, 2)))
    signs = jnp.array([-1.0 if i % 2 else 1.0, -1.0 if i // 2 else 1.0])
    return eps * signs


def prior_log_q(z, x):
    """A collapsed encoder: every posterior is the prior."""
    return _log_prior(z)


def prior_sample(key, x, num):
    return jax.random.normal(key, (num, 2))


@pytest.fixture(scope="module")
def quadrants():
    return tiling_metrics(quadrant_log_q, quadrant_sample, X, jax.random.key(0), num_prior=M, num_posterior=S)


def test_quadrant_tiles_are_equiprobable(quadrants):
    m = quadrants
    assert isinstance(m, TilingMetrics) and m.masses.shape == (N,)
    assert m.masses.sum() == pytest.approx(1.0)
    # Each mass is a binomial share: sd = sqrt(p(1-p)/M) = 0.0031 for p = 1/4;
    # 5 sd = 0.015 (a false alarm ~1e-6 per tile).
    np.testing.assert_allclose(m.masses, 1 / N, atol=5 * math.sqrt(0.25 * 0.75 / M))
    # CV of a multinomial with equal p: ≈ sqrt((1-p)/(Mp)) = 0.012; 0.05 is > 4 sd.
    assert m.mass_cv < 0.05
    assert m.empty_tiles == 0


def test_quadrant_tiles_are_pure_and_informative(quadrants):
    m = quadrants
    assert m.purity == 1.0
    np.testing.assert_array_equal(m.purity_per_exemplar, np.ones(N))
    # On exact tiles every sample contributes exactly ln 4 (log q − log π = ln 4 and
    # log q̄ = log π), so the Monte Carlo estimates have zero variance: float64
    # round-off is the only error.
    assert m.mutual_information == pytest.approx(math.log(N), abs=1e-6)
    assert m.mean_kl == pytest.approx(math.log(N), abs=1e-5)
    assert m.marginal_kl == pytest.approx(0.0, abs=1e-5)
    assert m.log_n == pytest.approx(math.log(N))


def test_collapsed_encoder_has_no_information():
    m = tiling_metrics(prior_log_q, prior_sample, X, jax.random.key(1), num_prior=2000, num_posterior=200)
    # Exact up to float32 round-off of log q against the float64 log π.
    assert m.mutual_information == pytest.approx(0.0, abs=1e-6)
    assert m.mean_kl == pytest.approx(0.0, abs=1e-6)
    assert m.marginal_kl == pytest.approx(0.0, abs=1e-6)
    # All log q tie, argmax picks the first tile: one tile holds everything.
    assert m.empty_tiles == N - 1
    assert m.masses[0] == 1.0


def test_overlapping_gaussians_have_intermediate_information():
    """Two unit Gaussians at ±a: 0 < I < ln 2, and mean KL = a²/2 exactly in expectation."""
    a = 1.0
    X2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)

    def log_q(z, x):
        mu = jnp.where(jnp.argmax(x) == 0, a, -a)
        return _log_prior(z - jnp.array([mu, 0.0]))

    def sample(key, x, num):
        mu = a if int(jnp.argmax(x)) == 0 else -a
        return jax.random.normal(key, (num, 2)) + jnp.array([mu, 0.0])

    m = tiling_metrics(log_q, sample, X2, jax.random.key(2), num_prior=4000, num_posterior=4000)
    assert 0.1 < m.mutual_information < math.log(2) - 0.1
    # KL(N(a,1)‖N(0,1)) = a²/2; 5 standard errors.
    assert m.mean_kl == pytest.approx(a**2 / 2, abs=5 * m.mean_kl_stderr)
    assert m.mean_kl == pytest.approx(m.mutual_information + m.marginal_kl, abs=1e-9)


def test_to_json_round_trip(quadrants, tmp_path):
    path = tmp_path / "m.json"
    quadrants.to_json(path)
    d = json.loads(path.read_text())
    assert d["purity"] == 1.0 and len(d["masses"]) == N
    assert d["mass_range_times_n"][0] == pytest.approx(quadrants.mass_range[0])
    assert "purity" in quadrants.summary()


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.ones(4)), "shape"),
    (dict(num_prior=0), "num_prior"),
    (dict(num_posterior=1.5), "num_posterior"),
])
def test_bad_arguments(kwargs, match):
    args = dict(x=X, num_prior=10, num_posterior=10)
    args.update(kwargs)
    x = args.pop("x")
    with pytest.raises(ValueError, match=match):
        tiling_metrics(quadrant_log_q, quadrant_sample, x, jax.random.key(0), **args)


def test_bad_log_q_output():
    with pytest.raises(ValueError, match="shape"):
        tiling_metrics(lambda z, x: jnp.zeros((3,)), prior_sample, X, jax.random.key(0), num_prior=10, num_posterior=10)
    with pytest.raises(ValueError, match="NaN"):
        tiling_metrics(lambda z, x: jnp.full(z.shape[:1], jnp.nan), prior_sample, X, jax.random.key(0),
                       num_prior=10, num_posterior=10)
