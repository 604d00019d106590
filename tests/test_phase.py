"""Differentiable phase detection: implicit derivatives, β_c, continuation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import equations, linalg, operators, phase, tile_jacobian
from vaefp_jax.engine.problem import Problem
from vaefp_jax.implicit import jacobian_matrix


@jax.jit
def _tight_fixed_point(x, beta, lp, psi0):
    problem = Problem(vf.DenseMap(), vf.Unconstrained(), x, lp, {}, {"beta": beta})
    return vf.Damped(damping=0.0, tol=1e-14, max_steps=200_000).run(problem, psi0, problem.init_state(psi0),
                                                                    None, 0).psi


def tile_map(psi, theta):
    """F(ψ, θ) with θ = {"x", "beta", "log_prior"}: eq. (15) as a map of (ψ, θ)."""
    return equations.step(psi, theta["x"], theta["beta"], theta["log_prior"])


@pytest.fixture(scope="module")
def clusters():
    with jax.enable_x64(True):
        x = jnp.asarray(vf.datasets.three_clusters(24, seed=2))
        grid = vf.LatentGrid.uniform(5)
        lp = jnp.asarray(grid.log_prior)
        psi0 = vf.initial_psi(x, grid, 0.1)
        yield x, grid, lp, psi0


def _u_fd(x, lp, psi_star, beta, h):
    """u at β±h, 2h from tight solves warm-started on the same branch."""
    vals = []
    for b in (beta - 2 * h, beta - h, beta, beta + h, beta + 2 * h):
        p = _tight_fixed_point(x, jnp.asarray(b), lp, psi_star)
        vals.append(float(vf.order_parameter(p, x, b, lp)))
    return np.array(vals)


@pytest.mark.parametrize("beta", [3e-3, 0.03])
def test_implicit_derivatives_match_finite_differences(clusters, beta, x64):
    x, grid, lp, psi0 = clusters
    psi_star = _tight_fixed_point(x, jnp.asarray(beta), lp, psi0)
    u_fn = lambda b: phase.order_parameter_at_fixed_point(b, x, lp, psi_star)
    du = float(jax.jit(jax.grad(u_fn))(jnp.asarray(beta)))
    d2u = float(jax.jit(jax.jacfwd(jax.jacfwd(u_fn)))(jnp.asarray(beta)))
    # Richardson-extrapolated central differences: O(h⁴) truncation. With u
    # accurate to ~1e-14 (tol 1e-14, ρ < 0.9 here) and h = 2 % of β, the
    # rounding in u'' is ~1e-14/h² ~ 1e-7 relative; truncation ~h⁴ u⁽⁶⁾ is below.
    h = 0.02 * beta
    um2, um1, u0, up1, up2 = _u_fd(x, lp, psi_star, beta, h)
    d1 = (8 * (up1 - um1) - (up2 - um2)) / (12 * h)
    d2 = (16 * (up1 + um1) - (up2 + um2) - 30 * u0) / (12 * h * h)
    assert du == pytest.approx(d1, rel=1e-4)
    assert d2u == pytest.approx(d2, rel=1e-4)


def test_three_ways_to_second_derivative_agree(clusters, x64):
    x, grid, lp, psi0 = clusters
    beta = jnp.asarray(0.01)
    psi_star = _tight_fixed_point(x, beta, lp, psi0)
    u_fn = lambda b: phase.order_parameter_at_fixed_point(b, x, lp, psi_star)
    a = float(jax.jit(jax.jacfwd(jax.jacfwd(u_fn)))(beta))
    b = float(jax.jit(jax.grad(jax.grad(u_fn)))(beta))
    c = float(jax.jit(jax.hessian(u_fn))(beta))
    assert a == pytest.approx(b, rel=1e-10) and a == pytest.approx(c, rel=1e-10)
    # the other linear solves give the same derivatives
    dense = lambda bb: phase.order_parameter_at_fixed_point(bb, x, lp, psi_star, linear_solver=vf.Dense())
    assert float(jax.jit(jax.hessian(dense))(beta)) == pytest.approx(a, rel=1e-8)
    gmres = lambda bb: phase.order_parameter_at_fixed_point(bb, x, lp, psi_star, linear_solver=vf.GMRES())
    assert float(jax.jit(jax.grad(gmres))(beta)) == pytest.approx(float(jax.jit(jax.grad(u_fn))(beta)), rel=1e-7)


def test_structured_jacobian_and_woodbury_against_dense(clusters, x64):
    x, grid, lp, psi0 = clusters
    beta = jnp.asarray(0.01)
    theta = {"x": x, "beta": beta, "log_prior": lp}
    for psi in (psi0, _tight_fixed_point(x, beta, lp, psi0)):
        J = jacobian_matrix(tile_map, psi, theta)
        f = tile_jacobian.jacobian_factors(psi, x, beta, lp)
        v = jax.random.normal(jax.random.PRNGKey(0), psi.shape, psi.dtype)
        np.testing.assert_allclose(tile_jacobian.matvec(f, v).reshape(-1), J @ v.reshape(-1), atol=1e-12)
        np.testing.assert_allclose(vf.Woodbury()(None, v, None, psi, theta),
                                   vf.Dense()(None, v, tile_map, psi, theta), rtol=1e-9, atol=1e-10)
    rho = float(operators.power_iteration(tile_jacobian.jacobian_factors(psi, x, beta, lp), psi, 2000)[0])
    assert rho == pytest.approx(np.max(np.abs(np.linalg.eigvals(np.asarray(J)))), rel=1e-3)


@pytest.mark.parametrize("d, beta, dtype", [(5, 1e-4, np.float64), (5, 1e-4, np.float32),
                                           (70, 0.3, np.float64), (70, 0.3, np.float32)])
def test_matvec_from_weights_against_dense_jacobian(d, beta, dtype, x64):
    # J v from the (K, n) weights alone (no (K, n, d) factor), both contraction paths
    # (differences for d ≤ 64, centred matrix products above), against the float64
    # Jacobian by forward-mode AD. Data off-centre (mean 5): clusters of radius √β around
    # 6 centres, and tiles within √β of them, so that J is O(1) (each tile weighs several
    # points) and the matrix-product form would cancel worst. Tolerance: float64 1e-10 of
    # max|Jv|; float32 2e-4 (the weights themselves carry ~1e-6 relative error from
    # logits of O(10), times the O(10) terms summed per tile).
    rng = np.random.default_rng(d)
    centres = 5.0 + rng.normal(size=(6, d))
    x = centres[rng.integers(0, 6, 30)] + np.sqrt(beta) * rng.normal(size=(30, d))
    K = 9
    psi = centres[rng.integers(0, 6, K)] + 0.5 * np.sqrt(beta) * rng.normal(size=(K, d))
    lp = np.full(K, -np.log(K))
    theta = {"x": jnp.asarray(x), "beta": jnp.asarray(beta), "log_prior": jnp.asarray(lp)}
    J = np.asarray(jacobian_matrix(tile_map, jnp.asarray(psi), theta))
    v = rng.normal(size=(K, d))
    ref = (J @ v.reshape(-1)).reshape(K, d)
    f = tile_jacobian.jacobian_factors(*(jnp.asarray(a, dtype) for a in (psi, x, beta, lp)))
    out = np.asarray(tile_jacobian.matvec(f, jnp.asarray(v, dtype)), np.float64)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert np.max(np.abs(ref)) > 0.1 * np.max(np.abs(v))   # J is not ≈ 0 here
    assert np.max(np.abs(out - ref)) <= tol * np.max(np.abs(ref))


@pytest.mark.parametrize("d", [1, 2, 3, 8, 9, 13])
def test_batched_solve_against_numpy(d, x64):
    # The per-tile solves of the Woodbury step: LAPACK-free elimination (d ≤ 8)
    # and one LAPACK call per system (d > 8), against NumPy; systems that need
    # row exchanges included.
    rng = np.random.default_rng(d)
    M = rng.normal(size=(40, d, d))
    M[0] = np.eye(d)[::-1]  # zero pivots without exchanges
    if d > 1:
        M[1, 0, 0] = 0.0
        M[2] = np.diag(10.0 ** -np.arange(d)) + 1e-3 * rng.normal(size=(d, d))  # badly scaled
    B = rng.normal(size=(40, d, 5))
    X = np.asarray(linalg.solve(jnp.asarray(M), jnp.asarray(B)))
    ref = np.linalg.solve(M, B)
    cond = np.linalg.cond(M)
    # backward-stable elimination: error ≲ cond · eps · |x|
    err = np.max(np.abs(X - ref), axis=(1, 2)) / np.max(np.abs(ref), axis=(1, 2))
    assert np.all(err <= 1e3 * cond * np.finfo(float).eps)


def test_derivative_with_respect_to_data(clusters, x64):
    x, grid, lp, psi0 = clusters
    beta = jnp.asarray(0.02)
    psi_star = _tight_fixed_point(x, beta, lp, psi0)
    u_x = lambda xx: phase.order_parameter_at_fixed_point(beta, xx, lp, psi_star)
    g = np.asarray(jax.jit(jax.grad(u_x))(x))
    rng = np.random.default_rng(0)
    h = 1e-5
    for _ in range(3):
        v = rng.normal(size=x.shape)
        v /= np.linalg.norm(v)
        up = float(vf.order_parameter(_tight_fixed_point(x + h * v, beta, lp, psi_star), x + h * v, beta, lp))
        um = float(vf.order_parameter(_tight_fixed_point(x - h * v, beta, lp, psi_star), x - h * v, beta, lp))
        # central difference: truncation h²·u''' ~ 1e-10, rounding 1e-14/h ~ 1e-9
        assert np.sum(g * v) == pytest.approx((up - um) / (2 * h), rel=1e-5, abs=1e-8)


@pytest.fixture(scope="module")
def blob_sweep():
    # The first split on cooling: follow the collapsed branch down in β
    # (continuation), 64 β over [0.3, 3]·λ_max as in the issue.
    with jax.enable_x64(True):
        x = vf.datasets.gaussian_blob(200, seed=0)
        lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
        grid = vf.LatentGrid.uniform(6)
        betas = np.geomspace(0.3, 3.0, 64) * lam
        res = phase.sweep(x, betas, grid, iteration=vf.Damped(damping=0.0, tol=1e-10, max_steps=20_000),
                          spectral_iters=200, continuation="cooling", throw=False)
        yield x, lam, grid, res


def test_gaussian_blob_first_transition_at_lambda_max(blob_sweep, x64):
    x, lam, grid, res = blob_sweep
    peaks = phase.critical_betas(res, top_k=3)
    # the detector must not miss it: one of the top-3 peaks brackets λ_max
    order = np.argsort(res.beta)
    near = [p for p in peaks if abs(np.log(p.beta / lam)) < 2 * np.log(res.beta[order][1] / res.beta[order][0])]
    assert near, f"no top-3 peak near λ_max: {[(p.beta / lam, p.height) for p in peaks]}"
    p = near[0]
    assert p.fixed_points_above == 1 and p.fixed_points_below >= 2
    beta_c = phase.refine_critical_beta(res, p, x, grid)
    assert beta_c == pytest.approx(lam, rel=0.01)


def test_spectral_radius_at_collapsed_solution(blob_sweep):
    x, lam, grid, res = blob_sweep
    collapsed = res.beta > 1.5 * lam
    assert np.all(res.distinct[collapsed] == 1)
    np.testing.assert_allclose(res.spectral_radius[collapsed], lam / res.beta[collapsed], rtol=1e-3)
    # and u = tr(Cov) with u' = u'' = 0 there
    np.testing.assert_allclose(res.u[collapsed], np.trace(np.cov(x.T, bias=True)), rtol=1e-9)
    assert np.max(np.abs(res.du[collapsed])) < 1e-8


def test_continuation_follows_one_branch(clusters, x64):
    x, grid, lp, psi0 = clusters
    betas = np.geomspace(1e-3, 0.3, 12)
    cool = phase.sweep(x, betas, grid, continuation="cooling", spectral_iters=0)
    assert np.all(cool.converged)
    # cooling from the collapsed state only ever splits: #fixed points never
    # grows with β along the followed branch
    order = np.argsort(cool.beta)
    assert np.all(np.diff(cool.distinct[order]) <= 0)
    assert cool.distinct[order][-1] == 1
    for j, b in enumerate(betas):  # each is a fixed point
        r = np.linalg.norm(np.asarray(equations.step(jnp.asarray(cool.psi[j]), x, b, lp)) - cool.psi[j])
        assert r < 1e-8
    indep = phase.sweep(x, betas, grid, spectral_iters=0)
    np.testing.assert_allclose(cool.u[-1], indep.u[-1], rtol=1e-8)  # same collapsed state at the top
    with pytest.raises(ValueError, match="continuation"):
        phase.sweep(x, betas, grid, continuation="sideways")


def test_critical_betas_on_a_constructed_curve():
    beta = np.linspace(1, 10, 19)
    d2u = np.zeros_like(beta)
    d2u[[4, 10, 15]] = [3.0, -7.0, 1.0]
    u = np.zeros_like(beta)
    u[15:] = 0.1  # a jump between β[14] and β[15]: D²u = 0.1/0.25 = 0.4 at 14 and 15
    solution = vf.Solution(beta=beta, psi=np.zeros((19, 1, 2)), status=np.full(19, vf.Status.CONVERGED, np.int8),
                           steps=np.ones(19, int), residual=np.zeros(19), stats={}, trajectory=None, tol=1e-10)
    res = phase.SweepResult(solution=solution, u=u, du=np.zeros_like(beta), d2u=d2u, spectral_radius=np.zeros(19),
                            distinct=np.arange(19)[::-1], merge_tol=0.1)
    peaks = phase.critical_betas(res, top_k=2)
    assert [p.index for p in peaks] == [10, 4]
    assert peaks[0].height == 7.0 and peaks[0].fixed_points_below == 9 and peaks[0].fixed_points_above == 7
    assert not peaks[0].jump
    third = phase.critical_betas(res, top_k=3)[2]
    assert third.index == 15 and third.height == pytest.approx(1.0)  # |u''| = 1 beats D²u = 0.4
    res.d2u[15] = 0.0
    jump = phase.critical_betas(res, top_k=3)[2]
    assert jump.jump and jump.height == pytest.approx(0.4) and jump.index in (14, 15)
    with pytest.raises(ValueError):
        phase.critical_betas(res, top_k=0)
