"""The accelerated solver reaches the same stable fixed point as plain iteration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import equations, operators, tile_jacobian


def test_near_critical_same_stable_fixed_point_fewer_evaluations(x64):
    x = vf.datasets.gaussian_blob(120, seed=0)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(6)
    betas = np.array([0.97, 1.03, 1.3]) * lam
    plain = vf.solve(x, betas, grid, iteration=vf.Damped(damping=0.0, tol=1e-11, max_steps=200_000))
    acc = vf.solve(x, betas, grid, iteration=vf.Accelerated(tol=1e-11, spectral_iters=40))
    assert np.all(acc.converged) and np.all(acc.stats["spectral_radius"] < 1)
    np.testing.assert_allclose(acc.psi, plain.psi, atol=1e-6)
    lp = jnp.asarray(grid.log_prior)
    for j, b in enumerate(betas):
        rho = float(operators.power_iteration(
            tile_jacobian.jacobian_factors(acc.psi[j], jnp.asarray(x), b, lp), acc.psi[j], 2000)[0])
        assert rho < 1 and rho == pytest.approx(float(acc.stats["spectral_radius"][j]), rel=1e-3)
    # within a few % of β_c plain iteration is slow; the accelerated one is not
    assert np.all(np.asarray(acc.steps[:2]) * 4 < np.asarray(plain.steps[:2]))


def test_escapes_the_unstable_collapsed_point(x64):
    # Start exactly at the collapsed configuration below β_c: a fixed point at
    # every β, unstable here. Plain Newton would stay; the solver must leave it.
    x = vf.datasets.gaussian_blob(120, seed=0)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(6)
    collapsed = np.broadcast_to(x.mean(0), (grid.num_tiles, 2))
    acc = vf.solve(x, np.array([0.7 * lam]), grid, psi0=collapsed, iteration=vf.Accelerated(spectral_iters=40))
    assert bool(acc.converged[0]) and float(acc.stats["spectral_radius"][0]) < 1
    assert int(acc.stats["escapes"][0]) >= 1
    u = float(vf.order_parameter(acc.psi[0], x, 0.7 * lam, grid.log_prior))
    assert u < np.trace(np.cov(x.T, bias=True)) * 0.99  # split: lower error than collapsed


@pytest.mark.parametrize("factor", [0.5, 0.97, 1.03, 3.0])
def test_lanczos_matches_dense_eigenvalues_at_fixed_points(x64, factor):
    """ρ and the leading eigenvector from 32 Lanczos steps against NumPy's
    eigenvalues of the dense Jacobian (jacfwd of the map), at stable fixed points
    of the blob (ρ → 1 near β_c = λ_max) and at the unstable collapsed point
    (ρ = λ_max/β > 1 for β < λ_max), whose unstable direction is the top
    principal axis for every tile alike."""
    x = vf.datasets.gaussian_blob(120, seed=0)
    cov = np.cov(x.T, bias=True)
    lam, axes = np.linalg.eigh(cov)
    grid = vf.LatentGrid.uniform(5)
    X, lp, beta = jnp.asarray(x), jnp.asarray(grid.log_prior), factor * lam[-1]
    stable = vf.solve(x, [beta], grid, iteration=vf.Damped(damping=0.0, tol=1e-12, max_steps=100_000)).psi[0]
    collapsed = jnp.broadcast_to(X.mean(0), stable.shape)
    for psi in (stable, collapsed) if factor < 1 else (stable,):
        J = np.asarray(jax.jacfwd(lambda p: equations.step(p, X, beta, lp))(psi)).reshape(psi.size, psi.size)
        rho_ref = np.abs(np.linalg.eigvals(J)).max()
        rho, v = operators.lanczos(tile_jacobian.jacobian_factors(psi, X, beta, lp), psi, 32)
        assert float(rho) == pytest.approx(rho_ref, rel=1e-9, abs=1e-12)
        v = np.asarray(v).reshape(-1)
        assert np.linalg.norm(J @ v - rho_ref * v) < 1e-6  # an eigenvector for ρ
    rho_collapsed = float(operators.lanczos(tile_jacobian.jacobian_factors(collapsed, X, beta, lp),
                                                collapsed, 32)[0])
    assert rho_collapsed == pytest.approx(lam[-1] / beta, rel=1e-9)


def test_power_certificate_agrees_and_bad_options():
    x = vf.datasets.gaussian_blob(60, seed=1)
    grid = vf.LatentGrid.uniform(4)
    b = np.array([0.02])
    a = vf.solve(x, b, grid, iteration=vf.Accelerated(tol=1e-4))
    p = vf.solve(x, b, grid, iteration=vf.Accelerated(tol=1e-4, spectral="power", spectral_iters=400))
    assert bool(a.converged[0]) and bool(p.converged[0])
    # each stops where ‖F(ψ) − ψ‖ < tol, so each is within tol / (1 − ρ) of the fixed point
    rho = float(a.stats["spectral_radius"][0])
    np.testing.assert_allclose(np.asarray(a.psi), np.asarray(p.psi), atol=2 * 1e-4 / (1 - rho))
    assert float(a.stats["spectral_radius"][0]) == pytest.approx(float(p.stats["spectral_radius"][0]), rel=1e-2)
    with pytest.raises(ValueError, match="spectral must be 'lanczos' or 'power'"):
        vf.solve(x, b, grid, iteration=vf.Accelerated(spectral="arnoldi"))
    with pytest.raises(ValueError, match="spectral_iters must be an integer ≥ 2"):
        vf.solve(x, b, grid, iteration=vf.Accelerated(spectral_iters=1))


@pytest.mark.slow   # ~30 s: two non-default paths (handoff is off by default)
def test_handoff_and_rejection_cap_reach_the_same_stable_fixed_point(x64):
    # Plain steps while they are predicted to beat Newton (handoff) and a Newton round
    # cut at the first rejection: other paths, the same certified fixed point as the
    # default (near β_c, where the paths differ most), within tol / (1 − ρ).
    x = vf.datasets.gaussian_blob(120, seed=0)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(6)
    betas = np.array([0.9, 1.05]) * lam
    ref = vf.solve(x, betas, grid, iteration=vf.Accelerated(tol=1e-11, spectral_iters=40))
    for it in (vf.Accelerated(tol=1e-11, spectral_iters=40, handoff=3.0),
               vf.Accelerated(tol=1e-11, spectral_iters=40, max_rejects=1)):
        r = vf.solve(x, betas, grid, iteration=it)
        assert np.all(r.converged) and np.all(r.stats["spectral_radius"] < 1)
        rho = float(np.max(ref.stats["spectral_radius"]))
        np.testing.assert_allclose(r.psi, ref.psi, atol=4 * 1e-11 / (1 - rho) + 1e-9)


def test_newton_cost_and_handoff_options():
    from vaefp_jax.iterations.accelerated import newton_cost
    assert 20 < newton_cost(120, 1024, 2) < 30 and 600 < newton_cost(1797, 144, 64) < 900
    with pytest.raises(ValueError, match="handoff"):
        vf.Accelerated(handoff=-1.0)
    with pytest.raises(ValueError, match="max_rejects must be an integer"):
        vf.Accelerated(max_rejects=0.5)
