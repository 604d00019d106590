"""The one-exponential map (equations.evaluate) against the log-space map and NumPy float64.

The two forms are algebraically equal (equations.TileWeights); what may differ is
rounding and range. The NumPy reference (``np_reference``) gets the same inputs
rounded to the working dtype and computes in extended precision (``np.longdouble``,
64-bit mantissa on x86; float64 for the float32 maps), so what remains is each
form's own rounding. Criterion: the one-exponential map's error is at most twice
the log-space map's plus a floor of a few ulps (the issue's "within twice the
two-exponential map's own rounding"), and 1e-5 (float32) / 1e-12 (float64)
relative wherever the log-space map itself meets that. Where ``np.longdouble`` is
float64 (some platforms), the float64 reference shares the log-space form's order
of operations and its rounding; the floor is then 1e3 eps (the logits of the
paper-like problem at β = 1e-6 are ~1e5, so either form's rounding is ~1e-11 there).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import equations

BETAS = np.geomspace(1e-6, 1e6, 13)


WIDE = np.longdouble if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else np.float64


def np_reference(psi, x, beta, log_prior, dtype):
    """(F(ψ) (K, d), log c_i (n,), log Σ_i m_ib (K,)) of eq. (14)–(15) in NumPy, in ``dtype``."""
    psi, x, lp = (np.asarray(a, dtype) for a in (psi, x, log_prior))
    a = -((x[:, None, :] - psi[None, :, :]) ** 2).sum(-1) / (2 * dtype(beta))   # (n, K)
    amax = (a + lp).max(axis=1, keepdims=True)
    log_c = (amax + np.log(np.exp(a + lp - amax).sum(axis=1, keepdims=True)))[:, 0]
    log_m = a - log_c[:, None]
    mmax = log_m.max(axis=0)
    m = np.exp(log_m - mmax)
    return (m.T @ x) / m.sum(axis=0)[:, None], log_c, mmax + np.log(m.sum(axis=0))


def _problems():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (30, 2))
    psi = rng.uniform(-0.5, 0.5, (25, 2))
    lp = rng.normal(size=25)
    lp -= np.log(np.exp(lp).sum())
    yield "paper-like", x, psi, lp
    far = psi.copy()
    far[:6] += 100.0                      # tiles far from every data point: all-underflow columns
    lp_dead = lp.copy()
    lp_dead[7] = -np.inf                  # a tile of zero prior mass
    lp_dead -= np.log(np.exp(lp_dead).sum())
    yield "far and dead tiles", x, far, lp_dead
    dup = np.concatenate([x[:10], x[:10], x[:10]])    # every point three times
    yield "duplicated points", dup, psi[:9], np.full(9, -np.log(9))
    x12 = rng.normal(size=(40, 12))
    yield ("d = 12", x12, x12[rng.choice(40, 16, replace=False)] + 0.1 * rng.normal(size=(16, 12)),
           np.full(16, -np.log(16)))


PROBLEMS = list(_problems())


# The error measure of each field of a MapValue: ψ relative to its largest entry; the two
# logarithms log c_i and log Σ_i m_ib relative to max(max |·|, 1). An absolute error δ of
# log c is the relative error e^δ − 1 ≈ δ of c itself, and the sum c = Σ_b π_b e^{ℓ_bi} has
# a relative rounding of a few ulps whatever its size; where |log c| ≪ 1 (β ≫ the data's
# spread: log c ≈ −‖x − ψ‖²/2β → 0) a relative measure of log c divides those ulps by
# |log c| (d = 12, β = 1e3: |log c| ≤ 0.019, so 1 ulp of float32 is 6e-6 "relative") and
# asks which order of summation, i.e. which vector width, happened to round less.
UNITS = {"psi": 0.0, "log_c": 1.0, "log_mass": 1.0}


def _rel(a, b, field="psi"):
    """max |a − b| / max(max |b|, UNITS[field]): relative error, or absolute below the unit."""
    a, b = np.asarray(a, WIDE), np.asarray(b, WIDE)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), UNITS[field], 1e-300)


def assert_as_accurate_as_log_space(value, two, ref, dtype, where):
    """``value`` (a MapValue) against the NumPy reference ``ref`` (psi, log_c, log_mass):
    finite, in ``dtype``, its error at most twice the log-space value ``two``'s plus a few
    ulps, and within 1e-5 (float32) / 1e-12 (float64) wherever the log-space value is; errors
    in the measure of ``UNITS`` (relative; the logarithms absolute below 1)."""
    eps = np.finfo(dtype).eps
    wide = np.float64 if dtype == np.float32 else WIDE
    floor = 8 * eps if np.finfo(wide).eps < eps else 1e3 * eps
    bound = 1e-5 if dtype == np.float32 else 1e-12
    for field, r in zip(("psi", "log_c", "log_mass"), ref):
        a, c = np.asarray(getattr(value, field)), np.asarray(getattr(two, field))
        assert a.dtype == dtype and np.all(np.isfinite(a)), (where, field)
        err, err_two = _rel(a, r, field), _rel(c, r, field)
        assert err <= 2 * err_two + floor, (where, field, err, err_two)
        if err_two <= bound:
            assert err <= bound, (where, field, err, err_two)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, x, psi, lp", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_one_exponential_map_against_log_space_and_numpy(name, x, psi, lp, dtype, x64):
    x, psi, lp = (np.asarray(a, dtype) for a in (x, psi, lp))
    wide = np.float64 if dtype == np.float32 else WIDE
    alive = np.isfinite(lp)
    for beta in BETAS:
        b = dtype(beta)
        ref = np_reference(psi, x, b, lp, wide)
        one = equations.evaluate(jnp.asarray(psi), jnp.asarray(x), jnp.asarray(b), jnp.asarray(lp))
        two = equations.evaluate_log_space(jnp.asarray(psi), jnp.asarray(x), jnp.asarray(b), jnp.asarray(lp))
        assert_as_accurate_as_log_space(one, two, ref, dtype, (name, beta))
        # the free energy and the aggregate posterior that every caller takes from them
        assert np.all(np.isfinite(np.asarray(one.tile_mass(jnp.asarray(lp)))[alive]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_weights_are_bounded_and_normalised(dtype, x64):
    # E ≤ 1 with a 1 in every row, c̃ in [1, K], posterior columns and weight rows summing to 1,
    # at the extremes of β, far tiles included. c̃_i ≥ 1 holds up to the rounding of
    # ℓ_bi − M_i, a few ulps of |M_i| (~1e5 at β = 1e-6: 0.008 in float32, in either form)
    _, x, psi, lp = PROBLEMS[1]
    K = psi.shape[0]
    for beta in (1e-6, 1.0, 1e6):
        tw = equations.tile_weights(*(jnp.asarray(a, dtype) for a in (psi, x, beta, lp)))
        E, c, M = np.asarray(tw.E), np.asarray(tw.c), np.asarray(tw.M, np.float64)
        eps = np.finfo(dtype).eps
        assert np.all(E <= 1) and np.allclose(E.max(axis=1), 1)
        assert np.all(c >= 1 - 4 * eps * (1 + np.abs(M))) and np.all(c <= K)
        np.testing.assert_allclose(np.asarray(tw.posterior).sum(axis=0), 1, rtol=50 * np.finfo(dtype).eps)
        np.testing.assert_allclose(np.asarray(tw.weights).sum(axis=1), 1, rtol=50 * np.finfo(dtype).eps)


def test_dense_map_form_is_checked():
    assert vf.DenseMap().form == "one_exponential"
    with pytest.raises(ValueError, match="form must be one of"):
        vf.DenseMap(form="two")


def test_order_parameter_derivatives_through_either_form_agree(x64):
    # u, u′, u″ of a converged fixed point through the one-exponential map and through
    # the log-space map: the same functions, so equal to rounding (1e-10 relative)
    x = jnp.asarray(vf.datasets.three_clusters(24, seed=2))
    grid = vf.LatentGrid.uniform(5)
    betas = np.array([3e-3, 0.02, 0.08])
    outs = []
    for form in ("one_exponential", "log_space"):
        r = vf.sweep(x, betas, grid, step_map=vf.DenseMap(form=form), iteration=vf.Damped.tight())
        assert np.all(r.converged)
        outs.append((r.u, r.du, r.d2u))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.max(np.abs(b)))


def test_one_exponential_gradient_matches_log_space(x64):
    # reverse mode through the shifts (stop_gradient on M and r loses no derivative)
    _, x, psi, lp = PROBLEMS[0]
    f = lambda form: jax.grad(lambda p: jnp.sum(jnp.sin(form(p, jnp.asarray(x), 0.05, jnp.asarray(lp)).psi)))
    g1 = f(equations.evaluate)(jnp.asarray(psi))
    g2 = f(equations.evaluate_log_space)(jnp.asarray(psi))
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)
