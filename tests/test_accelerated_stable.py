"""``Accelerated`` ends every β of a cooling sweep at a stable fixed point.

A standardised real data set (scikit-learn's diabetes, n = 442, d = 10), 8×8 tiles, 16 β from
0.1 to 3 λ_max on cooling: the sweep crosses the splits from one cluster down to dozens of
distinct fixed points. Before the certificate enlarged its Krylov space, β = 0.197 λ_max ended
UNSTABLE (ρ = 1.0026) at a point whose dense Jacobian has every eigenvalue below 1: 48 Lanczos
steps' Ritz bound straddled 1 on the cluster of eigenvalues just below it. The reference here
is the dense Jacobian of eq. (15) (jax.jacfwd of the map, NumPy's eigenvalues)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes

import vaefp_jax as vf
from vaefp_jax import equations
from vaefp_jax.iterations.phases import leading_eig

pytestmark = pytest.mark.xdist_group("accelerated_stable")  # one worker builds the module fixture


@pytest.fixture(scope="module")
def sweep():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        x = load_diabetes().data
        x = (x - x.mean(0)) / x.std(0)
        lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
        betas = np.geomspace(0.1 * lam, 3 * lam, 16)
        grid = vf.LatentGrid.uniform(8)
        sw = vf.sweep(x, betas, grid, iteration=vf.Accelerated(), continuation="cooling", throw=False)
        yield x, betas, grid, sw
    finally:
        jax.config.update("jax_enable_x64", before)


@jax.jit
def _dense_jacobian(x, beta, log_prior, psi):
    """∂F/∂ψ of eq. (15) as a (K d, K d) matrix, by forward differentiation of the map."""
    F = lambda p: equations.evaluate(p, x, beta, log_prior).psi
    return jax.jacfwd(F)(psi).reshape(psi.size, psi.size)


def _dense_spectral_radius(x, beta, grid, psi):
    J = _dense_jacobian(jnp.asarray(x), jnp.asarray(beta), jnp.asarray(grid.log_prior), jnp.asarray(psi))
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(J)))))


@jax.jit
def _certificate(x, beta, log_prior, psi, key):
    from vaefp_jax.engine.problem import Problem

    problem = Problem(step_map=vf.DenseMap(), constraint=vf.Unconstrained(), x=x, log_prior=log_prior, shared={},
                      theta={"beta": beta})
    return leading_eig(problem, psi, 48, key, "lanczos")[0]


def test_every_beta_converges_to_a_stable_fixed_point(sweep):
    x, betas, grid, sw = sweep
    assert np.all(sw.status == vf.Status.CONVERGED), [(b, int(s)) for b, s in zip(betas, sw.status) if s]
    rho = np.asarray(sw.solution.stats["spectral_radius"])
    assert np.all(rho < 1.0), rho
    assert sw.distinct[-1] == 1 and sw.distinct[0] >= 10     # several transitions crossed
    # the least stable of them, checked against the dense Jacobian
    j = int(np.argmax(rho))
    jax.config.update("jax_enable_x64", True)
    assert _dense_spectral_radius(x, betas[j], grid, sw.psi[j]) < 1.0


def test_certificate_is_an_upper_bound_that_decides_like_the_dense_jacobian(sweep):
    """At every β: the certificate's ρ is not below the dense spectral radius (it is a Ritz value
    widened by its residual bound), and both put the point on the same side of 1."""
    x, betas, grid, sw = sweep
    jax.config.update("jax_enable_x64", True)
    for j in range(betas.size):
        dense = _dense_spectral_radius(x, betas[j], grid, sw.psi[j])
        rho = _certificate(jnp.asarray(x), jnp.asarray(betas[j]), jnp.asarray(grid.log_prior), jnp.asarray(sw.psi[j]),
                           jax.random.PRNGKey(j))
        assert float(rho) >= dense - 1e-9, (betas[j], float(rho), dense)
        assert (float(rho) < 1.0) == (dense < 1.0), (betas[j], float(rho), dense)
