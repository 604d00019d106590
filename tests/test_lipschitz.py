"""Lipschitz constraints (Appendix B, Proposition 6): geometry, the corrected
projection P, strength mode (``LipschitzStrength``), bound mode (``LipschitzBound``)
and implicit derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import registry
from scipy import integrate, optimize, stats

import vaefp_jax as vf
from vaefp_jax import constraints as cs
from vaefp_jax import datasets
from vaefp_jax.equations import order_parameter, step
from vaefp_jax.grid import LatentGrid

# ---------------------------------------------------------------- geometry


def test_tile_kernel_matches_quadrature():
    """K_ab = ∫∫ φ_a φ_b ‖z − z'‖² by 4-D adaptive quadrature."""
    grid = LatentGrid.uniform(3, -0.5, 1.0)
    K = cs.tile_kernel(grid)
    for a, b in [(0, 0), (1, 8), (4, 6)]:
        lo_a, hi_a, lo_b, hi_b = grid.lower[a], grid.upper[a], grid.lower[b], grid.upper[b]
        f = lambda z1, z2, w1, w2: (z1 - w1) ** 2 + (z2 - w2) ** 2
        ranges = [(lo_a[0], hi_a[0]), (lo_a[1], hi_a[1]), (lo_b[0], hi_b[0]), (lo_b[1], hi_b[1])]
        ref, _ = integrate.nquad(f, ranges, opts={"limit": 5})
        assert K[a, b] == pytest.approx(ref, rel=1e-10)
    assert np.allclose(K, K.T)


def test_uniform_coefficients_closed_form():
    """On the unit square, C_ab = 1 / (L² (‖z_a − z_b‖² + w²/3))."""
    grid = LatentGrid.uniform(5)
    L = 0.7
    C = cs.lipschitz_coefficients(grid, L)
    d2 = ((grid.z[:, None] - grid.z[None]) ** 2).sum(-1)
    np.testing.assert_allclose(C, 1.0 / (L**2 * (d2 + grid.width**2 / 3)), rtol=1e-12)
    # the "prior" weighting coincides for a uniform prior on the unit square
    np.testing.assert_allclose(cs.lipschitz_coefficients(grid, L, "prior"), C, rtol=1e-12)


def test_gaussian_grid_prior_weighted_kernel():
    """The Lebesgue kernel diverges on the Normal grid's tail tiles (clear error);
    the prior-weighted one matches Monte Carlo with truncated Normals."""
    grid = LatentGrid.gaussian(3, limit=1.5)
    with pytest.raises(ValueError, match="diverges"):
        cs.tile_kernel(grid, "lebesgue")
    Kp = cs.tile_kernel(grid)  # default: prior weighting
    assert np.all(np.isfinite(Kp))
    rng = np.random.default_rng(0)

    def sample(a, m):
        lo, hi = grid.lower[a], grid.upper[a]
        return np.stack([stats.truncnorm.rvs(lo[k], hi[k], size=m, random_state=rng) for k in range(2)], 1)

    pi = grid.prior
    for a, b in [(0, 8), (0, 0), (4, 5)]:
        za, zb = sample(a, 400_000), sample(b, 400_000)
        mc = ((za - zb) ** 2).sum(1).mean() * pi[a] * pi[b]
        assert Kp[a, b] == pytest.approx(mc, rel=1e-2)


def test_support_masks():
    grid = LatentGrid.uniform(6)
    loc = cs.support_mask(grid, "local", r=0.2)
    glob = cs.support_mask(grid, "global")
    d = np.sqrt(((grid.z[:, None] - grid.z[None]) ** 2).sum(-1))
    assert not loc.diagonal().any() and not glob.diagonal().any()
    assert (loc == loc.T).all()
    np.testing.assert_array_equal(loc, (d < 0.2) & (d > 0))
    assert glob.sum() == 36 * 35
    with pytest.raises(ValueError, match="support"):
        cs.support_mask(grid, "nearby")


# ---------------------------------------------------------------- the projection P


def _np_q(psi, x, beta, log_prior):
    """q_ia = m_ia π_a, eq. (14), NumPy float64."""
    a = -((x[:, None] - psi[None]) ** 2).sum(-1) / (2 * beta) + log_prior[None]
    a = a - a.max(1, keepdims=True)
    q = np.exp(a)
    return q / q.sum(1, keepdims=True)


def _lagrangian(psi, q, x, W):
    """Eq. (18) with σ = 1 and the constraint term of eq. (5) (ordered pairs)."""
    n = x.shape[0]
    data = (q * ((x[:, None] - psi[None]) ** 2).sum(-1)).sum() / (2 * n)
    pen = 0.5 * (W * ((psi[:, None] - psi[None]) ** 2).sum(-1)).sum()
    return data + pen


def _small_problem(seed=0, k=3, n=7):
    rng = np.random.default_rng(seed)
    grid = LatentGrid.uniform(k)
    K = grid.num_tiles
    x = rng.uniform(-0.5, 0.5, (n, 2))
    psi = rng.uniform(-0.5, 0.5, (K, 2))
    C = cs.lipschitz_coefficients(grid, 1.0)
    mask = cs.support_mask(grid, "local", 0.5)
    w0 = cs.strength_scale(grid, mask, C)
    om = rng.uniform(0, 2, (K, K)) * w0
    omega = np.where(mask, om + om.T, 0.0)  # symmetric, ≥ 0, on the support
    return grid, x, psi, C, omega


def test_projection_matches_direct_minimisation(x64):
    grid, x, psi, C, omega = _small_problem()
    beta = 0.03
    out = np.asarray(cs.lipschitz_step(psi, x, beta, grid.log_prior, omega, C))
    q = _np_q(psi, x, beta, grid.log_prior)
    W = omega * C
    n, K = x.shape[0], grid.num_tiles
    # (a) the normal equations of the least-squares form of eq. (18), built
    # row by row (no Laplacian algebra): rows √(q_ia/2n)(ψ_a − x_i) and √(W_ab/2)(ψ_a − ψ_b).
    rows, rhs = [], []
    for i in range(n):
        for a in range(K):
            r = np.zeros(K)
            r[a] = np.sqrt(q[i, a] / (2 * n))
            rows.append(r)
            rhs.append(np.sqrt(q[i, a] / (2 * n)) * x[i])
    for a in range(K):
        for b in range(K):
            if W[a, b] > 0:
                r = np.zeros(K)
                r[a], r[b] = np.sqrt(W[a, b] / 2), -np.sqrt(W[a, b] / 2)
                rows.append(r)
                rhs.append(np.zeros(2))
    ref_ls = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    np.testing.assert_allclose(out, ref_ls, atol=1e-9)
    # (b) direct numerical minimisation of eq. (18).
    f = lambda v: _lagrangian(v.reshape(K, 2), q, x, W)
    res = optimize.minimize(f, psi.reshape(-1), method="BFGS", options={"gtol": 1e-13, "maxiter": 10_000})
    assert np.abs(res.x.reshape(K, 2) - out).max() <= 1e-6
    assert f(out.reshape(-1)) <= res.fun + 1e-15
    # The constraint acts: the result differs from the unconstrained F.
    assert np.abs(out - np.asarray(step(psi, x, beta, grid.log_prior))).max() > 1e-2


def test_projection_operator_properties_and_printed_sign(x64):
    grid, x, psi, C, omega = _small_problem(seed=1)
    beta = 0.03
    q = _np_q(psi, x, beta, grid.log_prior)
    s_bar = q.mean(0)
    W = omega * C
    P = np.asarray(cs.projection_operator(jnp.asarray(s_bar), jnp.asarray(W)))
    F = np.asarray(step(psi, x, beta, grid.log_prior))
    np.testing.assert_allclose(P.T @ F, np.asarray(cs.lipschitz_step(psi, x, beta, grid.log_prior, omega, C)),
                               atol=1e-12)
    assert P.min() >= -1e-14                    # non-negative …
    np.testing.assert_allclose(P.sum(0), 1.0, atol=1e-12)  # … columns sum to one: smoothing
    # The printed P of Appendix C.6 (minus sign, n σ² / (1ᵀm ⊙ π) on the left) is not the minimiser.
    n = x.shape[0]
    lap = np.diag(W.sum(1)) - W
    P_printed = np.linalg.inv(np.eye(len(s_bar)) - np.diag(1.0 / s_bar) @ lap)
    f = lambda p: _lagrangian(p, q, x, W)
    assert f(P_printed.T @ F) > f(P.T @ F) + 1e-6
    # The n of the printed P belongs to the eq. (5) scaling: with eq. (16)'s 1/(2n) the
    # minimiser is ours with Ω̃ → Ω̃/n.
    q16 = lambda p: _lagrangian(p, q, x, W / n)
    r16 = optimize.minimize(lambda v: q16(v.reshape(-1, 2)), F.reshape(-1), method="BFGS",
                            options={"gtol": 1e-13}).x.reshape(-1, 2)
    P16 = np.asarray(cs.projection_operator(jnp.asarray(s_bar), jnp.asarray(W / n)))
    assert np.abs(P16.T @ F - r16).max() <= 1e-6


# ---------------------------------------------------------------- strength mode


def test_strength_zero_is_the_unconstrained_solver_exactly():
    x = datasets.mixture_of_lines(30).astype(np.float32)
    grid = LatentGrid.uniform(6)
    betas = np.array([3e-4, 3e-3, 3e-2])
    a = vf.solve(x, betas, grid, throw=False, record_every=5, schedule=vf.Vmapped(batch_size=1))
    b = vf.solve(x, betas, grid, constraint=vf.LipschitzStrength(0.0), throw=False, record_every=5)
    # Same iteration, but two compiled programs: XLA fuses the map differently in
    # each (the constrained update adds a projection to the loop body, and the
    # schedules differ), so float32 iterates may differ in the last bits (~1e-7).
    np.testing.assert_allclose(np.asarray(a.psi), np.asarray(b.psi), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a.steps), np.asarray(b.steps))
    # Along the way last-bit differences can grow transiently (expanding directions
    # of the map before the iterate settles): 3e-6 seen at one β; 1e-5 bounds it.
    np.testing.assert_allclose(np.asarray(a.trajectory), np.asarray(b.trajectory), rtol=0, atol=1e-5)
    psi = np.asarray(a.psi[1])
    zero = np.zeros((grid.num_tiles,) * 2, np.float32)
    C = cs.lipschitz_coefficients(grid).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(cs.lipschitz_step(psi, x, np.float32(1e-3),
                                                               grid.log_prior.astype(np.float32), zero, C)),
                                  np.asarray(step(psi, x, np.float32(1e-3), grid.log_prior.astype(np.float32))))


def _neighbour_spread(psi, grid):
    """Mean ‖ψ_a − ψ_b‖ over the 4-neighbour pairs of the grid."""
    nb = cs.support_mask(grid, "local", 1.01 * grid.width)
    d = np.sqrt(((psi[:, None] - psi[None]) ** 2).sum(-1))
    return d[nb].mean()


@pytest.mark.parametrize("dataset", ["lines", "circles"])
@pytest.mark.parametrize("support, r", [("local", 0.2), ("global", 1.0)])
def test_smoother_as_strength_grows(dataset, support, r, x64):
    """Mean neighbour spread decreases along a ladder of strengths from 0.1 ω₀ up,
    and the strongest constraint is much smoother than none. (Below ~0.1 ω₀ a
    *global* constraint first increases the spread: the hole tiles, which without
    constraint copy their nearest data point, get interpolated between distant
    data — measured in docs/lipschitz.md.)"""
    x = {"lines": datasets.mixture_of_lines, "circles": datasets.mixture_of_circles}[dataset](60)
    grid = LatentGrid.uniform(10)
    C = cs.lipschitz_coefficients(grid)
    w0 = cs.strength_scale(grid, cs.support_mask(grid, support, r), C)
    rel = np.array([0.0, 0.1, 0.3, 1.0, 3.0, 10.0])
    res = vf.solve(x, np.full(rel.shape, 1e-3), grid, psi0=grid.z,
                   iteration=vf.Damped(damping=0.0, tol=1e-8, max_steps=4000),
                   constraint=vf.LipschitzStrength(rel * w0, support=support, r=r))
    assert np.asarray(res.converged).all()
    spread = [_neighbour_spread(np.asarray(p), grid) for p in res.psi]
    assert np.all(np.diff(spread[1:]) < 0), spread
    assert spread[-1] < 0.6 * spread[0], spread


def test_implicit_derivative_in_beta(x64):
    """d u / dβ through the constrained fixed point (``sweep`` with
    ``LipschitzStrength``: implicit differentiation, never unrolled) against
    central finite differences of solves; likewise in the strength, through
    ``implicit_fixed_point`` on ``constraints.lipschitz_step``."""
    rng = np.random.default_rng(3)
    grid = LatentGrid.uniform(4)
    x = jnp.asarray(rng.uniform(-0.5, 0.5, (6, 2)))
    C = jnp.asarray(cs.lipschitz_coefficients(grid))
    mask = cs.support_mask(grid, "local", 0.3)
    strength = 0.5 * cs.strength_scale(grid, mask, np.asarray(C))
    omega = jnp.asarray(np.where(mask, strength, 0.0))
    lpr = jnp.asarray(grid.log_prior)
    beta0 = 0.02
    tight = vf.Damped(damping=0.0, tol=1e-12, max_steps=20_000)
    constraint = lambda s=1.0: vf.LipschitzStrength(s * strength, support="local", r=0.3)

    def fixed_point(beta, psi0, s=1.0):
        return vf.solve(x, [beta], grid, iteration=tight, constraint=constraint(s), psi0=psi0, throw=True).psi[0]

    # A converged fixed point to start every solve from (the same branch).
    psi_star = fixed_point(beta0, grid.z)

    def u(beta):
        return float(order_parameter(fixed_point(beta, psi_star), x, beta, lpr))

    sw = vf.sweep(x, [beta0], grid, iteration=tight, constraint=constraint(), psi0=psi_star, spectral_iters=0,
                  throw=True)
    du = float(sw.du[0])
    h = 1e-5 * beta0
    fd = (u(beta0 + h) - u(beta0 - h)) / (2 * h)
    assert du == pytest.approx(fd, rel=1e-4)
    # the constraint matters here: it changes the fixed point
    F = lambda p: step(p, x, beta0, lpr)
    assert np.abs(np.asarray(F(psi_star)) - np.asarray(psi_star)).max() > 1e-3
    # and derivatives in Ω̃ (a scalar strength) also match: reverse mode through
    # implicit_fixed_point with the map Pᵀ F of constraints.lipschitz_step, at the
    # converged ψ* of strength 1 (× 0.5 ω₀)
    G = lambda p, th: cs.lipschitz_step(p, x, beta0, lpr, th["s"] * omega, C)

    @jax.jit
    def u_s(s):
        psi = vf.implicit_fixed_point(G, lambda th, p: p, {"s": s}, vf.Dense(), psi_init=psi_star)
        return order_parameter(psi, x, beta0, lpr)

    ds = float(jax.jit(jax.grad(u_s))(1.0))
    u_fd = lambda s: float(order_parameter(fixed_point(beta0, psi_star, s), x, beta0, lpr))
    fds = (u_fd(1.0 + 1e-5) - u_fd(1.0 - 1e-5)) / 2e-5
    assert ds == pytest.approx(fds, rel=1e-4)


# ---------------------------------------------------------------- constraint mode


def _bound_iteration(tol=None):
    """The outer iteration of the bound mode: undamped, at most 1000 steps (tol
    None: 1e-10 in float64)."""
    return vf.Damped(damping=0.0, tol=tol, max_steps=1000)


def _feasible(res, feas_tol=0.0):
    """(B,) the bound holds at the answer (``LipschitzBound(feas_tol=0)``)."""
    return np.asarray(res.stats["max_violation"]) <= feas_tol


@pytest.fixture(scope="module")
def constrained():
    with jax.enable_x64(True):
        x = datasets.mixture_of_lines(20)
        grid = LatentGrid.uniform(6)
        Ls = np.array([100.0, 2.0, 1.0, 0.5, 0.25])
        res = vf.solve(x, np.full(Ls.shape, 1e-3), grid, psi0=grid.z, iteration=_bound_iteration(tol=1e-9),
                       constraint=vf.LipschitzBound(Ls, support="local", r=0.3))
        free = vf.solve(x, [1e-3], grid, psi0=grid.z, iteration=vf.Damped(damping=0.0, tol=1e-11, max_steps=5000))
        return dict(x=x, grid=grid, Ls=Ls, res=jax.tree.map(np.asarray, res), free=np.asarray(free.psi[0]))


def test_constraint_mode_satisfies_the_bound(constrained):
    res, grid, Ls = constrained["res"], constrained["grid"], constrained["Ls"]
    assert res.converged.all() and _feasible(res).all()
    mask = cs.support_mask(grid, "local", 0.3)
    for j, L in enumerate(Ls):
        C = cs.lipschitz_coefficients(grid, L)
        psi = res.psi[j]
        g = C * ((psi[:, None] - psi[None]) ** 2).sum(-1)
        assert g[mask].max() <= 1.0 + 1e-12
        assert res.stats["max_violation"][j] == pytest.approx(g[mask].max() - 1.0, abs=1e-12)
        omega = res.stats["omega"][j]
        assert (omega >= 0).all() and (omega[~mask] == 0).all()


def test_constraint_mode_large_L_is_unconstrained(constrained):
    res = constrained["res"]
    np.testing.assert_allclose(res.psi[0], constrained["free"], atol=1e-7)
    assert (res.stats["omega"][0] == 0).all()


def test_constraint_mode_flatter_as_L_decreases(constrained):
    res, grid = constrained["res"], constrained["grid"]
    mask = cs.support_mask(grid, "local", 0.3)
    dz = np.sqrt(((grid.z[:, None] - grid.z[None]) ** 2).sum(-1))
    ratios = []
    for psi in res.psi:
        dpsi = np.sqrt(((psi[:, None] - psi[None]) ** 2).sum(-1))
        ratios.append((dpsi[mask] / dz[mask]).max())
    assert np.all(np.diff(ratios) < 0), ratios
    # the bound is active: the smallest L saturates it
    assert ratios[-1] > 0.9 * constrained["Ls"][-1]


def test_constraint_mode_kkt(constrained, x64):
    """Stationarity of Proposition 6 with the returned multipliers, multiplied out:
    s̄_a (ψ_a − F_a) + Σ_b 2 C_ab Ω̃_ab (ψ_a − ψ_b) = 0, i.e. ψ = Pᵀ(Ω̃ ⊙ C) F(ψ)
    times its matrix diag(s̄) + L(2 C Ω̃); and complementary slackness
    Ω̃_ab (1 − C_ab‖ψ_a − ψ_b‖²) ≈ 0.

    Why the multiplied-out form: solving for ψ divides by s̄_a (down to 1e-15 in
    empty tiles), and Ω̃ = μ/(−h) moves to first order with ψ on nearly active
    pairs, so ‖Pᵀ F(ψ) − ψ‖ amplified a 1e-10 change of rounding to 1.6e-6 on
    another CPU. The gradient is bounded by the outer tolerance: a residual step
    δ ≲ 1e-9 against forces s̄|ψ − F| with |ψ − F| ~ 0.1 leaves ~1e-8 of the
    largest force (measured ≤ 1e-8 over ulp-perturbed data and lower-ISA kernels);
    1e-6 is that with a margin of 100. F and s̄ are the NumPy float64 reference
    map of eqs. (14)–(15) (``tests/registry.ref_map``)."""
    res, grid, x = constrained["res"], constrained["grid"], constrained["x"]
    mask = cs.support_mask(grid, "local", 0.3)
    log_prior = np.asarray(grid.log_prior, np.float64)
    for j in (2, 3, 4):
        C = np.asarray(cs.lipschitz_coefficients(grid, constrained["Ls"][j]))
        psi = np.asarray(res.psi[j], np.float64)
        omega = res.stats["omega"][j]
        F, s_bar = registry.ref_map(psi, x, 1e-3, log_prior)
        force = s_bar[:, None] * (psi - F)
        grad = force + np.einsum("ab,abk->ak", 2.0 * C * omega, psi[:, None] - psi[None])
        assert np.abs(grad).max() <= 1e-6 * np.abs(force).max(), (j, np.abs(grad).max() / np.abs(force).max())
        g = C * ((psi[:, None] - psi[None]) ** 2).sum(-1) - 1
        # Ω̃_ab (−h_ab) = μ, the barrier floor (1e-9 × the data variance)
        slack = np.abs(omega * g)[mask].max()
        var = ((x - x.mean(0)) ** 2).sum(1).mean()
        assert slack <= 1e-9 * var * (1 + 1e-6)
        assert omega.max() > 0


# ---------------------------------------------------------------- validation


def test_public_boundary_errors():
    grid = LatentGrid.uniform(4)
    x = datasets.mixture_of_lines(12)
    strength = lambda s: vf.LipschitzStrength(s)
    with pytest.raises(ValueError, match="strength"):
        vf.solve(x, [1e-3], grid, constraint=strength(-1.0))
    with pytest.raises(ValueError, match="beta"):
        vf.solve(x, [0.0, 1e-3], grid, constraint=strength(1.0))
    with pytest.raises(ValueError, match="L must be"):
        vf.solve(x, [1e-3], grid, iteration=_bound_iteration(), constraint=vf.LipschitzBound(0.0))
    with pytest.raises(ValueError, match="L must be"):
        cs.lipschitz_coefficients(grid, -1.0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vf.solve(bad, [1e-3], grid, constraint=strength(1.0))
    with pytest.raises(ValueError, match="NaN"):
        vf.solve(x, [1e-3], grid, constraint=strength(np.nan))
    # strength is a scalar or one per β (0.1 said "do not broadcast")
    with pytest.raises(ValueError, match="like betas"):
        vf.solve(x, [1e-3, 1e-2], grid, constraint=strength([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="empty"):
        vf.solve(x, [1e-3], grid, iteration=_bound_iteration(),
                 constraint=vf.LipschitzBound(1.0, support="local", r=0.01))
    with pytest.raises(ValueError, match="r must be"):
        cs.support_mask(grid, "local", r=0.0)


def test_lipschitz_step_rejects_bad_multipliers():
    grid = LatentGrid.uniform(4)
    x = datasets.mixture_of_lines(12)
    K = grid.num_tiles
    C = cs.lipschitz_coefficients(grid)
    psi = grid.z
    with pytest.raises(ValueError, match="omega"):
        cs.lipschitz_step(psi, x, 1e-3, grid.log_prior, -np.ones((K, K)), C)
    with pytest.raises(ValueError, match="omega"):
        cs.lipschitz_step(psi, x, 1e-3, grid.log_prior, np.ones((K, K + 1)), C)


# ------------------------------------------- constraint mode on other machines

_CONSTRAINED_PROBLEM = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import vaefp_jax as vf
from vaefp_jax import datasets
from vaefp_jax.grid import LatentGrid
x = datasets.mixture_of_lines(20) * float(sys.argv[1])
grid = LatentGrid.uniform(6)
res = vf.solve(x, [1e-3 * float(sys.argv[1]) ** 2] * 3, grid, psi0=grid.z * float(sys.argv[1]),
               iteration=vf.Damped(damping=0.0, tol=1e-9, max_steps=1000),
               constraint=vf.LipschitzBound((2.0, 0.5, 0.25), support="local", r=0.3), throw=False)
viol = np.asarray(res.stats["max_violation"])
print(json.dumps({"converged": np.asarray(res.converged).tolist(), "feasible": (viol <= 0.0).tolist(),
                  "max_violation": viol.tolist(), "finite": bool(np.isfinite(np.asarray(res.psi)).all())}))
"""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return set(next(line for line in fh if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def _lower_isa_environments():
    """Environments that change the order of floating-point reductions: XLA's
    vector ISA capped at AVX2 (what a Zen 3 EPYC runs; the AVX-512 default
    reduces in another order) and OpenBLAS's LAPACK kernels of an AVX2 core
    (Haswell, as a Zen 3 selects) or of an SSE3 core."""
    flags = _cpu_flags()
    # The SSE one is behind `slow` when the AVX2 one runs (suite time on 2 cores).
    sse = {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2", "OPENBLAS_CORETYPE": "Prescott"}
    if "avx2" not in flags:
        return [sse]
    return [{"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "OPENBLAS_CORETYPE": "Haswell"},
            pytest.param(sse, marks=pytest.mark.slow, id="Prescott")]


@pytest.mark.parametrize("env", _lower_isa_environments(), ids=lambda e: e["OPENBLAS_CORETYPE"])
def test_constraint_mode_converges_whatever_the_reduction_order(env, tmp_path):
    """The L = 0.25 problem returned NaN on an AVX2 machine: near the boundary
    the barrier's Newton matrix has a condition number past 1/eps, and whether
    its factorisation breaks down depended on rounding. Run in a fresh process
    with the ISA and LAPACK kernels of smaller machines: every problem converges,
    feasible, and nothing is NaN."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "constrained.py"
    script.write_text(_CONSTRAINED_PROBLEM)
    out = subprocess.run([sys.executable, str(script), "1.0"], env=os.environ | env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["finite"] and all(res["converged"]) and all(res["feasible"]), res
    assert max(res["max_violation"]) <= 0.0


@pytest.mark.parametrize("scale", [1.0 + 2 ** -52])
def test_constraint_mode_robust_to_perturbations_of_a_few_ulps(scale, x64):
    """The same problem with the data (and β, ψ0 with it) scaled by 1 + 1 ulp: a
    change of rounding, on any machine, must not turn into NaN or non-convergence."""
    x = datasets.mixture_of_lines(20) * scale
    grid = LatentGrid.uniform(6)
    res = vf.solve(x, [1e-3 * scale**2] * 3, grid, psi0=grid.z * scale,
                   iteration=_bound_iteration(tol=1e-9 * scale),
                   constraint=vf.LipschitzBound((2.0, 0.5, 0.25), support="local", r=0.3), throw=False)
    assert np.isfinite(np.asarray(res.psi)).all()
    assert np.asarray(res.converged).all() and _feasible(res).all()


def test_bound_on_float32_data_with_x64_enabled():
    """float32 data while JAX's x64 is on (another part of the program asked for it): the barrier
    path's μ stayed float64 and its loop refused the mixed carry (a TypeError)."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        x = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
        sol = vf.solve(x, np.array([0.1, 1.0]), vf.LatentGrid.uniform(3), constraint=vf.LipschitzBound(1.0, r=1.0),
                       iteration=vf.Damped(0.5, 1e-3, 3), throw=False)
        assert sol.psi.dtype == np.float32 and np.all(np.isfinite(np.asarray(sol.psi)))
    finally:
        jax.config.update("jax_enable_x64", before)
