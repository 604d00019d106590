"""The one-pass map: eq. (14)–(15) with the previous evaluation's normalisers as shifts.

``equations.evaluate_shifted`` takes the shifts of its exponentials as inputs;
``DenseMap.evaluate_warm`` feeds it log c_i and log Σ_i m_ib of the previous
iterate and falls back to ``equations.evaluate`` when its range check fails. The
references are the NumPy extended-precision map of tests/test_one_exponential.py
(same criterion: at most twice the log-space map's error plus a few ulps, and 1e-5 /
1e-12 relative wherever the log-space map meets that) and closed forms of the
range-check quantities.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_one_exponential import BETAS, PROBLEMS, WIDE, assert_as_accurate_as_log_space, np_reference

import vaefp_jax as vf
from vaefp_jax import equations
from vaefp_jax.engine.schedules import Vmapped

vf.native.ensure_built()   # tracing never builds: the maps below run the CPU kernel wherever it builds


def _moved(psi, beta, scale, seed=0):
    """ψ moved by up to ``scale`` min(β, 1) per coordinate. The logits then change by at
    most about √d · scale · ‖x_i − ψ_b‖ (plus a smaller quadratic term): a few units for
    the tiles 100 away at scale 0.05, which keeps the ratios c̃_i and Σ_i E_bi / c̃_i of
    one-step-old shifts well inside [2^-20, 2^20] (e^±13.9)."""
    rng = np.random.default_rng(seed)
    return psi + scale * min(beta, 1.0) * rng.uniform(-1, 1, size=psi.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, x, psi, lp", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_shifted_map_against_log_space_and_numpy(name, x, psi, lp, dtype, x64):
    # shifts from the evaluation at ψ_prev, the value at ψ = ψ_prev + δ: what an iteration does
    eps = np.finfo(dtype).eps
    wide = np.float64 if dtype == np.float32 else WIDE
    lp_j = jnp.asarray(lp, dtype)
    for beta in BETAS:
        b = jnp.asarray(beta, dtype)
        prev = np.asarray(psi, dtype)
        now = np.asarray(_moved(psi, beta, 0.05), dtype)
        old = equations.evaluate(jnp.asarray(prev), jnp.asarray(x, dtype), b, lp_j)
        value, ok = equations.evaluate_shifted(jnp.asarray(now), jnp.asarray(x, dtype), b, lp_j,
                                               old.log_c, old.log_mass)
        # The check must pass wherever the shifts hold the logits' changes (a few units) to
        # better than one unit: |shift| eps < 1/4. Where they do not (float32, β = 1e-6,
        # tiles 100 away: log Σ m ~ -1e10, whose ulp is 1024) it may fail, and the map
        # then recomputes (evaluate_warm, whose value is what is compared below).
        scale = max(np.max(np.abs(np.asarray(old.log_c))), np.max(np.abs(np.asarray(old.log_mass))))
        if scale * eps < 0.25:
            assert bool(ok), (name, beta)
        value, _ = vf.DenseMap().evaluate_warm(jnp.asarray(now), jnp.asarray(x, dtype), b, lp_j,
                                               (old.log_c, old.log_mass))
        two = equations.evaluate_log_space(jnp.asarray(now), jnp.asarray(x, dtype), b, lp_j)
        ref = np_reference(now, np.asarray(x, dtype), dtype(beta), np.asarray(lp, dtype), wide)
        assert_as_accurate_as_log_space(value, two, ref, dtype, (name, beta))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_range_check_closed_forms(dtype, x64):
    # With the shifts of ψ itself, c̃_i = 1 and Σ_i E_bi / c̃_i = 1 (to rounding), so the
    # value is ok; +inf shifts (the first step) give E = 0, and shifts 30 too small
    # (e^30 > 2^20 times too large sums) or 30 too large fail the check.
    _, x, psi, lp = PROBLEMS[1]   # far and dead tiles
    args = [jnp.asarray(a, dtype) for a in (psi, x, 0.01, lp)]
    v = equations.evaluate(*args)
    same, ok = equations.evaluate_shifted(*args, v.log_c, v.log_mass)
    assert bool(ok)
    for field in ("log_c", "log_mass"):   # to a few hundred ulps of the largest logit
        r = np.asarray(getattr(v, field))
        np.testing.assert_allclose(np.asarray(getattr(same, field)), r, rtol=0,
                                   atol=1e3 * np.finfo(dtype).eps * (1 + np.max(np.abs(r))))
    infs = (jnp.full_like(v.log_c, jnp.inf), jnp.full_like(v.log_mass, jnp.inf))
    assert not bool(equations.evaluate_shifted(*args, *infs)[1])
    for delta in (30.0, -30.0):
        assert not bool(equations.evaluate_shifted(*args, v.log_c + delta, v.log_mass)[1]), delta
        assert not bool(equations.evaluate_shifted(*args, v.log_c, v.log_mass + delta)[1]), delta
    # within the range (e^10 < 2^20): still ok, and the same value
    shifted, ok = equations.evaluate_shifted(*args, v.log_c + 10.0, v.log_mass - 10.0)
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(shifted.psi), np.asarray(v.psi), rtol=0,
                               atol=1e3 * np.finfo(dtype).eps * np.max(np.abs(np.asarray(v.psi))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_warm_evaluation_falls_back_to_the_maxima(dtype, x64):
    # a first step (+inf state) and a move far beyond the previous shifts' range (β = 1e-4,
    # ψ moved by 0.3 per coordinate: logits change by ~1e3) are recomputed by evaluate;
    # a small move is not, and every value equals evaluate's to rounding
    _, x, psi, lp = PROBLEMS[0]
    dense = vf.DenseMap()
    beta = 1e-4
    xj, lpj, b = jnp.asarray(x, dtype), jnp.asarray(lp, dtype), jnp.asarray(beta, dtype)
    state = dense.init_state(x.shape[0], psi.shape[0], dtype)
    eps = np.finfo(dtype).eps
    for now, expect_ok in ((psi, False), (psi + 0.3, False), (_moved(psi + 0.3, beta, 0.05), True)):
        nowj = jnp.asarray(now, dtype)
        _, ok = equations.evaluate_shifted(nowj, xj, b, lpj, *state)
        assert bool(ok) == expect_ok
        value, state = dense.evaluate_warm(nowj, xj, b, lpj, state)
        ref = equations.evaluate(nowj, xj, b, lpj)
        for field in ("psi", "log_c", "log_mass"):
            a, r = np.asarray(getattr(value, field)), np.asarray(getattr(ref, field))
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, r, rtol=0, atol=1e3 * eps * (1 + np.max(np.abs(r))))
        np.testing.assert_array_equal(np.asarray(state[0]), np.asarray(value.log_c))


def test_dense_map_options():
    assert vf.DenseMap().reuse_shifts and repr(vf.DenseMap()) == "DenseMap()"
    assert repr(vf.DenseMap(reuse_shifts=False)) == "DenseMap(reuse_shifts=False)"
    assert vf.DenseMap(form="log_space").init_state(3, 4, jnp.float32) == ()
    assert vf.DenseMap(reuse_shifts=False).init_state(3, 4, jnp.float32) == ()
    with pytest.raises(ValueError, match="reuse_shifts must be True or False"):
        vf.DenseMap(reuse_shifts=1)


@pytest.mark.parametrize("schedule", [vf.Pool(width=3), Vmapped(batch_size=1)], ids=["pool-3", "one-at-a-time"])
def test_solve_with_reused_shifts_equals_the_maxima(schedule, x64):
    # the same fixed points (tight float64 solves, 1e-9) and step counts (within 2: the
    # last steps' residuals are ~1e-10, where a rounding difference can move the stop)
    # with reused shifts (the default) and with the maxima every step, over β across the
    # transitions of the three-cluster data, vmapped lanes (pool) and one β at a time
    x = vf.datasets.three_clusters(40, seed=1)
    grid = vf.LatentGrid.uniform(8)
    betas = np.geomspace(1e-3, 1.0, 9)
    out = {}
    for reuse in (True, False):
        out[reuse] = vf.solve(x, betas, grid, iteration=vf.Damped.tight(), schedule=schedule,
                              step_map=vf.DenseMap(reuse_shifts=reuse))
        assert np.all(out[reuse].converged), reuse
    np.testing.assert_allclose(np.asarray(out[True].psi), np.asarray(out[False].psi), rtol=0, atol=1e-9)
    assert np.max(np.abs(np.asarray(out[True].steps) - np.asarray(out[False].steps))) <= 2


def test_one_at_a_time_schedule_keeps_conditionals():
    # lax.map(f, batch_size=1) vmaps f, and a vmapped cond runs both branches; the
    # one-at-a-time schedule must map without vmap so that its problems' conds branch
    f = lambda th, p0: jax.lax.cond(th["beta"] > 0, lambda: p0 * 2.0, lambda: jnp.sin(p0))
    jaxpr = str(jax.make_jaxpr(lambda th, p0: Vmapped(batch_size=1).run(f, None, th, p0, 4))(
        {"beta": jnp.ones(4)}, jnp.ones((3, 2))))
    assert "cond[" in jaxpr and "select_n" not in jaxpr
