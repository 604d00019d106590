"""Implicit derivatives along the reduced model's branches (vaefp_jax.phase.reduced_implicit):
u′, u″ against finite differences of re-solved branches, dβ_c/dx against finite differences of
re-found roots and against the one-cluster closed form, and the gauge of log γ (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

from vaefp_jax.phase import reduced
from vaefp_jax.phase import reduced_implicit as ri

pytestmark = pytest.mark.usefixtures("x64")

TIGHT = dict(tol=1e-14, max_steps=200_000)


def _two_blobs(seed=1, n=40):
    """Two overlapping blobs (d = 2), centred: the two-cluster branch couples them visibly."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal([0.0, 0.0], [0.5, 0.3], (n // 2, 2)),
                        rng.normal([1.6, 0.4], [0.3, 0.6], (n - n // 2, 2))])
    return x - x.mean(0), np.array([[-0.8, -0.2], [0.8, 0.2]])


def _three_blobs(seed=4, n=45):
    """Three well-separated blobs in d = 3, centred."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [2.5, 0.5, 0.0], [0.5, 2.5, 1.0]])
    x = np.concatenate([rng.normal(c, [0.4, 0.5, 0.3], (n // 3, 3)) for c in centres])
    return x - x.mean(0), centres - x.mean(0)


def _solve(x, beta, psi0, log_mass0):
    """The branch at β, warm-started from (ψ⁰, log γ⁰), converged to 1e-14."""
    sol = reduced.solve_reduced(x, np.array([beta]), psi0, log_mass0, **TIGHT)
    assert bool(sol.converged[0]), (beta, float(sol.residual[0]))
    return sol.psi[0], sol.log_mass[0]


def _richardson(f, h):
    """(f′(0), f″(0)) from central differences at ±h and ±2h, Richardson-extrapolated: error O(h⁴)."""
    f0, fp, fm, f2p, f2m = f(0.0), f(h), f(-h), f(2 * h), f(-2 * h)
    d1 = (4 * (fp - fm) / (2 * h) - (f2p - f2m) / (4 * h)) / 3
    d2 = (4 * (fp - 2 * f0 + fm) / h**2 - (f2p - 2 * f0 + f2m) / (4 * h**2)) / 3
    return d1, d2


def _branch_fd(x, beta, psi, log_mass):
    """u′, u″ at β by re-solving the branch at β ± h, β ± 2h (h = 4·10⁻³ β)."""
    xj = jnp.asarray(x)

    def u(delta):
        p, lm = _solve(x, beta + delta, psi, log_mass)
        return float(reduced.order_parameter(p, lm, xj, beta + delta))

    return _richardson(u, 4e-3 * beta)


@pytest.mark.parametrize("problem, betas", [(_two_blobs, (0.1, 0.2, 0.3)), (_three_blobs, (0.1, 0.25))],
                         ids=["two-clusters", "three-clusters"])
def test_u_derivatives_match_finite_differences_of_the_branch(problem, betas):
    """u′ and u″ by implicit differentiation against Richardson-extrapolated central differences
    of u on the re-solved branch. Error budget of the differences: truncation O(h⁴) ~ 1e-9 of the
    scale of u at h = 4·10⁻³ β, plus the solve error of u (~1e-14: the steps' residual 1e-14
    amplified by 1/(1 − ρ) with ρ ≲ 0.5 here) over h² ~ 1e-6 β² for u″ (≲ 1e-7 at β ≥ 0.1) and
    over h for u′ (≲ 1e-11)."""
    x, start = problem()
    m = start.shape[0]
    betas = np.asarray(betas)
    sol = reduced.solve_reduced(x, betas, start, np.log(np.full(m, 1.0 / m)), **TIGHT)
    assert bool(np.all(sol.converged))
    got = ri.branch_derivatives(x, sol.psi, sol.log_mass, betas)
    assert got.u.shape == got.du.shape == got.d2u.shape == betas.shape
    for j, beta in enumerate(betas):
        assert float(got.u[j]) == pytest.approx(
            float(reduced.order_parameter(sol.psi[j], sol.log_mass[j], jnp.asarray(x), beta)), rel=1e-14)
        d1, d2 = _branch_fd(x, beta, sol.psi[j], sol.log_mass[j])
        assert float(got.du[j]) == pytest.approx(d1, rel=1e-6, abs=1e-10)
        assert float(got.d2u[j]) == pytest.approx(d2, rel=1e-5, abs=1e-7)
    assert np.all(np.asarray(got.du) > 0)          # u increases with β on these branches


def test_one_cluster_u_is_the_total_variance():
    """One cluster at the mean is a fixed point at every β, u = tr Cov exactly: u′ = u″ = 0."""
    x, _ = _two_blobs()
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
    betas = np.array([1.1, 2.0, 5.0]) * lam
    psi = np.broadcast_to(x.mean(0), (3, 1, 2))
    got = ri.branch_derivatives(x, psi, np.zeros((3, 1)), betas)
    np.testing.assert_allclose(np.asarray(got.u), np.trace(np.cov(x.T, bias=True)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(got.du), 0.0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(got.d2u), 0.0, atol=1e-13)


def test_the_gauge_of_log_mass():
    """J = ∂F/∂z annihilates (0, 1_m) (the map sees log γ − logsumexp log γ), (0, γ) is a left null
    vector (its output is normalised), I − J stays invertible on the branch, and shifting the
    input log γ by a constant changes nothing."""
    x, start = _two_blobs()
    sol = reduced.solve_reduced(x, np.array([0.2]), start, np.log([0.5, 0.5]), **TIGHT)
    psi, lm = sol.psi[0], sol.log_mass[0]
    z = ri._flatten(psi, lm)
    J = np.asarray(ri._jacobian(z, 0.2, jnp.asarray(x), 2, None))
    gauge = np.concatenate([np.zeros(4), np.ones(2)])
    left = np.concatenate([np.zeros(4), np.exp(np.asarray(lm))])
    np.testing.assert_allclose(J @ gauge, 0.0, atol=1e-14)
    np.testing.assert_allclose(left @ J, 0.0, atol=1e-14)
    assert np.linalg.svd(np.eye(6) - J, compute_uv=False).min() > 0.1
    base = ri.branch_derivatives(x, sol.psi, sol.log_mass, np.array([0.2]))
    shifted = ri.branch_derivatives(x, sol.psi, sol.log_mass + 3.0, np.array([0.2]))
    for a, b in zip(base, shifted):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("options", [dict(dense_max=0), dict(chunk=16)], ids=["gmres", "blocked"])
def test_gmres_and_blocked_sums_match_the_dense_solve(options):
    """The matrix-free GMRES solve (forced by dense_max = 0) and the blocked sums (chunk = 16 of
    n = 40, a padded last block) give the dense results to rounding."""
    x, start = _two_blobs()
    betas = np.array([0.15, 0.3])
    sol = reduced.solve_reduced(x, betas, start, np.log([0.5, 0.5]), **TIGHT)
    dense = ri.branch_derivatives(x, sol.psi, sol.log_mass, betas)
    other = ri.branch_derivatives(x, sol.psi, sol.log_mass, betas, **options)
    for a, b in zip(dense, other):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-14)


def test_float32_follows_float64():
    """Float32 inputs give float32 u, u′, u″ and dβ_c/dx close to the float64 values (from the same
    float64 fixed points rounded, so only the derivatives' own rounding shows)."""
    x, start = _two_blobs()
    betas = np.array([0.15, 0.3])
    sol = reduced.solve_reduced(x, betas, start, np.log([0.5, 0.5]), **TIGHT)
    ref = ri.branch_derivatives(x, sol.psi, sol.log_mass, betas)
    f32 = lambda a: np.asarray(a, np.float32)
    got = ri.branch_derivatives(f32(x), f32(sol.psi), f32(sol.log_mass), f32(betas))
    for a, b in zip(ref, got):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4)
    x3 = np.random.default_rng(7).normal(size=(30, 3)) * [1.0, 0.6, 0.3]
    lam = np.linalg.eigvalsh(np.cov(x3.T, bias=True)).max()
    args = (x3.mean(0)[None], np.zeros(1), lam, 0)
    grad32 = ri.critical_beta_gradient(f32(x3), *(f32(a) for a in args[:3]), 0)
    assert grad32.dtype == jnp.float32
    ref = np.asarray(ri.critical_beta_gradient(x3, *args))
    np.testing.assert_allclose(np.asarray(grad32), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def _g(x, beta, psi0, log_mass0, cluster):
    """λ_max(C_a(z*(β))) − β on the branch re-solved at β."""
    p, lm = _solve(x, beta, psi0, log_mass0)
    return float(reduced.critical_temperature(p, lm, jnp.asarray(x), beta, cluster)[0]) - beta


def _root(x, psi0, log_mass0, cluster, lo, hi):
    """β_c by Brent's method to ~1e-14 relative (the branch re-solved at each trial β)."""
    return brentq(lambda b: _g(x, b, psi0, log_mass0, cluster), lo, hi, xtol=1e-16, rtol=1e-14, maxiter=200)


def _roots(problem, brackets, beta0):
    """The branch of ``problem`` through β₀ and, for each cluster a of ``brackets`` (a: (lo, hi)),
    its critical β on that branch with the fixed point there: {a: (β_c, ψ, log γ)}."""
    x, start = problem()
    m = start.shape[0]
    psi0, lm0 = _solve(x, beta0, start, np.log(np.full(m, 1.0 / m)))
    roots = {}
    for a, (lo, hi) in brackets.items():
        beta_c = _root(x, psi0, lm0, a, lo, hi)
        psi, lm = _solve(x, beta_c, psi0, lm0)
        roots[a] = (beta_c, np.asarray(psi), np.asarray(lm))
    return x, roots


@pytest.fixture(scope="module")
def two_cluster_roots():
    """The two-cluster branch of the overlapping blobs and the critical β of each cluster on it
    (β_c ≈ 0.194 and 0.177, where λ_max(C_a) still varies with β: the branch term matters)."""
    with jax.enable_x64(True):
        return _roots(_two_blobs, {0: (0.15, 0.25), 1: (0.12, 0.22)}, 0.2)


@pytest.fixture(scope="module")
def three_cluster_roots():
    """The three-cluster branch of the separated blobs in d = 3 (state size 12: the LAPACK solve
    rather than the unrolled one) and the critical β ≈ 0.36 of its cluster 1."""
    with jax.enable_x64(True):
        return _roots(_three_blobs, {1: (0.3, 0.4)}, 0.2)


@pytest.mark.parametrize("roots, cluster, entries", [
    ("two_cluster_roots", 0, ((0, 0), (5, 1), (25, 0), (33, 1))),
    ("two_cluster_roots", 1, ((0, 0), (5, 1), (25, 0), (33, 1))),
    ("three_cluster_roots", 1, ((2, 2), (20, 0), (40, 1))),
], ids=["two-clusters-0", "two-clusters-1", "three-clusters-1"])
def test_critical_beta_gradient_matches_finite_differences(request, roots, cluster, entries):
    """dβ_c/dx_ij against Richardson central differences of the re-found root (x_ij ± h, ± 2h,
    h = 10⁻³): truncation O(h⁴) ~ 1e-12, root error ~1e-15 over h ~ 1e-12; entries of points in
    every blob (the other blobs act on β_c only through the branch)."""
    x, found = request.getfixturevalue(roots)
    beta_c, psi, lm = found[cluster]
    assert float(ri.critical_beta(x, psi, lm, beta_c, cluster)) == beta_c
    grad = np.asarray(ri.critical_beta_gradient(x, psi, lm, beta_c, cluster))
    assert grad.shape == x.shape
    for i, j in entries:
        def shifted_root(delta):
            xs = x.copy()
            xs[i, j] += delta
            return _root(xs, psi, lm, cluster, beta_c - 0.02, beta_c + 0.02)

        d1, _ = _richardson(shifted_root, 1e-3)
        assert grad[i, j] == pytest.approx(d1, rel=1e-5, abs=1e-10), (i, j)


def test_one_cluster_critical_beta_closed_form():
    """One cluster: β_c = λ_max(Cov(x)), so dβ_c/dx_i = (2/n) ((x_i − x̄)·v) v, v the top eigenvector."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 3)) * [1.0, 0.6, 0.3] + [0.5, -1.0, 2.0]
    evals, evecs = np.linalg.eigh(np.cov(x.T, bias=True))
    lam, v = evals[-1], evecs[:, -1]
    psi, lm = x.mean(0)[None], np.zeros(1)
    assert float(ri.critical_beta(x, psi, lm, lam, 0)) == lam
    expected = (2.0 / x.shape[0]) * ((x - x.mean(0)) @ v)[:, None] * v[None, :]
    np.testing.assert_allclose(np.asarray(ri.critical_beta_gradient(x, psi, lm, lam, 0)), expected,
                               rtol=0, atol=1e-10 * np.abs(expected).max())


def test_critical_beta_jvp_equals_gradient_dot_direction(two_cluster_roots):
    """jax.jvp along a direction equals gradient · direction, and reverse mode through a parameter
    that x depends on (x = θ x₀) gives dβ_c/dθ = Σ gradient · x₀."""
    x, roots = two_cluster_roots
    beta_c, psi, lm = roots[0]
    xj = jnp.asarray(x)
    grad = np.asarray(ri.critical_beta_gradient(x, psi, lm, beta_c, 0))
    direction = np.random.default_rng(3).normal(size=x.shape)
    value, tangent = jax.jvp(lambda xx: ri.critical_beta(xx, psi, lm, beta_c, 0), (xj,), (jnp.asarray(direction),))
    assert float(value) == beta_c
    assert float(tangent) == pytest.approx(float(np.sum(grad * direction)), rel=1e-12)
    dtheta = jax.grad(lambda th: ri.critical_beta(th * xj, psi, lm, beta_c, 0))(1.0)
    assert float(dtheta) == pytest.approx(float(np.sum(grad * x)), rel=1e-12)


def test_critical_beta_gradient_under_jit_vmap_and_gmres(two_cluster_roots):
    """The same gradient under jit with a traced cluster index, under vmap over the clusters, and
    through the matrix-free adjoint solve (GMRES on v ↦ v − Jᵀ v, forced by dense_max = 0)."""
    x, roots = two_cluster_roots
    beta_c, psi, lm = roots[0]
    xj = jnp.asarray(x)
    grad = np.asarray(ri.critical_beta_gradient(x, psi, lm, beta_c, 0))
    traced = jax.jit(lambda xx, a: ri.critical_beta_gradient(xx, psi, lm, beta_c, a))(xj, 0)
    np.testing.assert_allclose(np.asarray(traced), grad, rtol=1e-12, atol=1e-16)
    both = jax.vmap(lambda a: jax.grad(ri.critical_beta)(xj, psi, lm, beta_c, a))(jnp.arange(2))
    np.testing.assert_allclose(np.asarray(both[0]), grad, rtol=1e-12, atol=1e-16)
    gm = ri.critical_beta_gradient(x, psi, lm, beta_c, 0, dense_max=0)
    np.testing.assert_allclose(np.asarray(gm), grad, rtol=1e-9, atol=1e-14)
