"""The matrix-free Newton solve (GMRES on products J·v) for large n, against the exact
Woodbury solve and a dense LU, and its use by Accelerated, the branch Newton and the sweep."""

import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import equations, operators, tile_jacobian
from vaefp_jax.implicit import GMRES, Woodbury, jacobian_matrix


def _problem(beta_factor, seed=0):
    x = vf.datasets.gaussian_blob(120, seed=seed)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(5)
    return x, grid, beta_factor * lam


@pytest.mark.parametrize("beta_factor", [0.5, 0.97, 1.5])
def test_krylov_solve_against_dense_lu(beta_factor, x64):
    # (I − J) v = r at a point off the fixed point, J the AD Jacobian of the map (an
    # independent reference): GMRES to its relative residual, the residual checked directly.
    x, grid, beta = _problem(beta_factor)
    K = grid.num_tiles
    psi = jnp.asarray(grid.z * 1.5 + 0.05 * np.random.default_rng(1).normal(size=(K, 2)))
    xj, lp = jnp.asarray(x), jnp.asarray(grid.log_prior)
    f = tile_jacobian.jacobian_factors(psi, xj, beta, lp)
    r = equations.step(psi, xj, beta, lp) - psi
    J = np.asarray(jacobian_matrix(lambda p, t: equations.step(p, xj, beta, lp), psi, None))
    A = np.eye(J.shape[0]) - J
    exact = np.linalg.solve(A, np.asarray(r).ravel())
    for rtol in (1e-6, 1e-11):
        v = np.asarray(operators.krylov_solve(f, r, rtol=rtol, restart=2 * K * 2)).ravel()
        res = np.linalg.norm(A @ v - np.asarray(r).ravel()) / np.linalg.norm(np.asarray(r))
        assert res <= 10 * rtol
        # the error is bounded by the condition number times the residual
        assert np.linalg.norm(v - exact) <= np.linalg.cond(A) * 10 * rtol * np.linalg.norm(exact)
    w = np.asarray(tile_jacobian.woodbury_solve_factors(f, r)).ravel()
    np.testing.assert_allclose(w, exact, rtol=1e-8, atol=1e-10 * np.abs(exact).max())


def test_krylov_stops_within_its_product_budget(x64):
    # an unreachable tolerance: bounded work, a finite answer, no hang
    x, grid, beta = _problem(0.97)
    xj, lp = jnp.asarray(x), jnp.asarray(grid.log_prior)
    psi = jnp.asarray(grid.z)
    f = tile_jacobian.jacobian_factors(psi, xj, beta, lp)
    r = equations.step(psi, xj, beta, lp) - psi
    v = operators.krylov_solve(f, r, rtol=1e-300, restart=5, cycles=2)
    assert np.all(np.isfinite(np.asarray(v)))


def test_solve_choice_by_size():
    assert not operators.prefers_krylov(120, 1024, 2)      # the paper's size
    assert not operators.prefers_krylov(178, 144, 13)      # wine
    assert operators.prefers_krylov(1797, 144, 64)         # digits
    assert operators.newton_solve_name("auto", 1797, 144, 64) == "krylov"
    assert operators.newton_solve_name("auto", 150, 144, 4) == "woodbury"
    with pytest.raises(ValueError, match="newton_solve must be"):
        vf.Accelerated(newton_solve="lu")
    from vaefp_jax.iterations.accelerated import newton_cost
    assert newton_cost(1797, 144, 64, "krylov") < newton_cost(1797, 144, 64, "woodbury") / 3
    assert isinstance(vf.phase.default_linear_solver(vf.Unconstrained(), 1797, 144, 64), GMRES)
    assert isinstance(vf.phase.default_linear_solver(vf.Unconstrained(), 120, 1024, 2), Woodbury)


def test_accelerated_with_krylov_newton_reaches_the_same_fixed_point(x64):
    x, grid, beta = _problem(1.0)
    betas = np.array([0.8, 0.97, 1.03]) * beta
    exact = vf.solve(x, betas, grid, iteration=vf.Accelerated(newton_solve="woodbury", spectral_iters=40))
    krylov = vf.solve(x, betas, grid, iteration=vf.Accelerated(newton_solve="krylov", spectral_iters=40))
    assert np.all(exact.converged) and np.all(krylov.converged)
    assert np.all(krylov.stats["newton_steps"] > 0)
    # both certified stable fixed points to tol 1e-10: the same one where it is unique up to
    # the tiles' labels; compare the order parameter, which does not depend on the labels
    lp = grid.log_prior
    for j, b in enumerate(betas):
        u_e = float(vf.order_parameter(exact.psi[j], x, b, lp))
        u_k = float(vf.order_parameter(krylov.psi[j], x, b, lp))
        assert u_k == pytest.approx(u_e, rel=1e-8)


def test_branch_refinement_with_krylov_equals_woodbury(x64):
    # the collapse of a Gaussian blob: β_c = λ_max of its covariance, by either solve
    x, grid, lam = _problem(1.0)
    hi = vf.solve(x, [1.1 * lam], grid, iteration=vf.Accelerated(spectral_iters=40))
    out = {}
    for ns in ("woodbury", "krylov"):
        out[ns] = vf.phase.refine_bracket(x, grid, 0.9 * lam, 1.1 * lam, hi.psi[0], iterations=24, newton_solve=ns)[0]
    assert out["krylov"] == pytest.approx(out["woodbury"], rel=1e-5)
    assert out["krylov"] == pytest.approx(lam, rel=1e-4)


def test_sweep_derivatives_with_gmres_equal_woodbury(x64):
    x, grid, lam = _problem(1.0)
    betas = np.array([0.6, 0.9, 1.4]) * lam
    it = vf.Accelerated(spectral_iters=40)
    a = vf.sweep(x, betas, grid, iteration=it, linear_solver=Woodbury(), spectral_iters=0)
    b = vf.sweep(x, betas, grid, iteration=it, linear_solver=GMRES(tol=1e-12, restart=60, maxiter=4),
                 spectral_iters=0)
    np.testing.assert_allclose(b.du, a.du, rtol=1e-7)
    np.testing.assert_allclose(b.d2u, a.d2u, rtol=1e-6, atol=1e-8 * np.abs(a.d2u).max())
