"""Propositions 2–5 as functions, each against the fixed-point map."""

import numpy as np
import pytest

from vaefp_jax import Damped, datasets, solve
from vaefp_jax import propositions as pr
from vaefp_jax.equations import free_energy, step, tile_posterior
from vaefp_jax.grid import LatentGrid

# ---------------------------------------------------------------- Proposition 2


def _spread_points(n, seed=0):
    """n data points at least 0.1 apart."""
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(-0.45, 0.45, 2)
        if all(np.linalg.norm(p - q) > 0.1 for q in pts):
            pts.append(p)
    return np.array(pts)


def test_equiprobable_partition_is_a_fixed_point_with_kl_ln_n(x64):
    n = 6
    grid = LatentGrid.uniform(12)
    x = _spread_points(n)
    owner = pr.equiprobable_partition(grid.log_prior, n)
    post = pr.partition_posterior(x, owner, grid.log_prior)
    np.testing.assert_allclose(post.masses, 1.0 / n, rtol=1e-12)
    assert pr.expected_kl(post.masses) == pytest.approx(np.log(n), rel=1e-12)
    beta = 1e-4  # σ → 0: e^{−δ²/2β} ≤ e^{−50}
    # ψ_a = x_owner(a) is a fixed point of eq. (2)–(3) …
    np.testing.assert_allclose(np.asarray(step(post.psi, x, beta, grid.log_prior)), post.psi, atol=1e-15)
    # … and the encoder of eq. (2) at that decoder is the partition posterior.
    np.testing.assert_allclose(np.asarray(tile_posterior(post.psi, x, beta, grid.log_prior)), post.q, atol=1e-15)
    # the β-free energy is β E[KL] there (no reconstruction error)
    f = float(free_energy(post.psi, x, beta, grid.log_prior))
    assert f / beta == pytest.approx(np.log(n), rel=1e-12)


def test_unequal_partition_has_a_lower_elbo(x64):
    n = 6
    grid = LatentGrid.uniform(12)
    x = _spread_points(n, seed=1)
    owner = pr.equiprobable_partition(grid.log_prior, n)
    unequal = owner.copy()
    unequal[owner == 1] = 0       # point 0 takes the tiles of point 1 …
    unequal[:4] = 1               # … and gives 4 back
    post = pr.partition_posterior(x, unequal, grid.log_prior)
    assert not np.allclose(post.masses, 1.0 / n)
    beta = 1e-4
    np.testing.assert_allclose(np.asarray(step(post.psi, x, beta, grid.log_prior)), post.psi, atol=1e-15)
    kl_unequal = pr.expected_kl(post.masses)
    assert kl_unequal > np.log(n) + 0.05
    f_eq = float(free_energy(x[owner], x, beta, grid.log_prior)) / beta
    f_uneq = float(free_energy(post.psi, x, beta, grid.log_prior)) / beta
    assert f_uneq == pytest.approx(kl_unequal, rel=1e-12)
    assert f_uneq > f_eq  # negative ELBO higher: ELBO lower
    # Any partition of this grid has E[KL] ≥ ln n (Jensen): random ones.
    rng = np.random.default_rng(0)
    for _ in range(20):
        o = np.concatenate([np.arange(n), rng.integers(0, n, grid.num_tiles - n)])
        rng.shuffle(o)
        assert pr.expected_kl(pr.partition_posterior(x, o, grid.log_prior).masses) >= np.log(n) - 1e-12


def test_partition_errors():
    grid = LatentGrid.uniform(3)
    x = _spread_points(3)
    with pytest.raises(ValueError, match="positive prior mass"):
        pr.partition_posterior(x, np.zeros(9, int), grid.log_prior)
    with pytest.raises(ValueError, match="n must be"):
        pr.equiprobable_partition(grid.log_prior, 10)


# ---------------------------------------------------------------- Proposition 3


def test_blurred_reconstruction_against_eq3():
    """Overlapping supports on a 4 × 4 uniform grid: eq. (3) with
    q(z|x_i) = π(z) 1[z ∈ Ω_i] / π_i, evaluated tile by tile."""
    grid = LatentGrid.uniform(4)
    x = np.array([[0.3, -0.2], [-0.1, 0.4], [-0.35, -0.3]])
    supports = [range(0, 8), range(4, 12), range(10, 16)]       # Ω_0 ∩ Ω_1, Ω_1 ∩ Ω_2 overlap
    member = np.zeros((16, 3), bool)
    for i, s in enumerate(supports):
        member[list(s), i] = True
    masses = (member * grid.prior[:, None]).sum(0)
    g = pr.blurred_reconstruction(member, masses, x)
    for a in range(16):
        q = np.array([grid.prior[a] * member[a, i] / masses[i] for i in range(3)])  # ∝ q(z_a|x_i)
        w = q / q.sum()
        np.testing.assert_allclose(g[a], w @ x, rtol=1e-13, atol=1e-15)
    # tiles 4–7 (in Ω_0 and Ω_1, masses 1/2 and 1/2) → equal weights;
    # tiles 10, 11 (Ω_1 mass 1/2, Ω_2 mass 3/8) weight x_2 by 4/3.
    np.testing.assert_allclose(g[5], (x[0] + x[1]) / 2, atol=1e-15)
    np.testing.assert_allclose(g[10], (x[1] / 0.5 + x[2] / 0.375) / (1 / 0.5 + 1 / 0.375), atol=1e-15)
    # a hole is unconstrained
    assert np.isnan(pr.blurred_reconstruction(np.zeros((1, 3), bool), masses, x)).all()


def test_blurred_reconstruction_is_the_map_at_a_shared_tile(x64):
    """The decoder step of eq. (15) at tiles whose ψ is equidistant from x_0 and x_1
    (shared by their posteriors) is eq. (12) with π_i the mass of i's own tiles."""
    grid = LatentGrid.gaussian(4, limit=1.0)          # unequal tile masses
    x = np.array([[-0.1, 0.0], [0.1, 0.0], [0.0, 0.6]])
    own = {0: [0, 1, 2, 4], 1: [3, 7, 11], 2: [12, 13, 14, 15, 8, 9]}
    shared = [5, 6, 10]
    psi = np.zeros((16, 2))
    for i, tiles in own.items():
        psi[tiles] = x[i]
    psi[shared] = [0.0, 0.05]                        # equidistant (0.112) from x_0, x_1; far from x_2
    beta = 1e-4
    out = np.asarray(step(psi, x, beta, grid.log_prior))
    masses = np.array([grid.prior[own[i]].sum() for i in range(3)])
    member = np.array([[True, True, False]] * len(shared))
    np.testing.assert_allclose(out[shared], pr.blurred_reconstruction(member, masses, x), rtol=1e-10)
    assert not np.allclose(out[shared[0]], (x[0] + x[1]) / 2)  # the 1/π_i weights matter


# ---------------------------------------------------------------- Proposition 4


def test_mika_preimage_iteration_reaches_the_same_points(x64):
    x = datasets.three_clusters(30)
    grid = LatentGrid.uniform(6)
    # β = 6e-4: six fixed points (sub-clusters). At β = 3e-4 (twelve) some of them are
    # stable only through the coupling of the c_i: with c frozen, Mika's decoupled
    # iteration moves away from them.
    beta = 6e-4
    res = solve(x, [beta], grid, iteration=Damped(damping=0.0, tol=1e-12, max_steps=20_000), throw=False)
    assert bool(res.converged[0])
    psi = np.asarray(res.psi[0])
    log_gamma = np.asarray(pr.preimage_coefficients(psi, x, beta, grid.log_prior))
    # With c fixed, eq. (15) *is* Mika's step: the same map of ψ.
    np.testing.assert_allclose(np.asarray(pr.preimage_step(psi, x, log_gamma, beta)),
                               np.asarray(step(psi, x, beta, grid.log_prior)), atol=1e-13)
    # Independent NumPy implementation of Mika et al.'s iteration, Gaussian kernel
    # exp(−‖z − x‖² / c) with c = 2β and γ_i = 1 / c_i, from nearby starts.
    gamma = np.exp(log_gamma - log_gamma.max())
    rng = np.random.default_rng(0)
    z = psi + 1e-3 * rng.standard_normal(psi.shape)
    c = 2 * beta
    for _ in range(1000):
        d2 = ((z[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        k = np.exp(-(d2 - d2.min(1, keepdims=True)) / c) * gamma[None]
        z = (k @ x) / k.sum(1, keepdims=True)
    np.testing.assert_allclose(z, psi, atol=1e-8)
    assert len(pr.group_tiles(psi, grid.log_prior, 1e-6).centres) == 6  # a non-trivial set of points


# ---------------------------------------------------------------- Proposition 5


def test_equipartition_masses_one_lowest_tile_per_point(x64):
    n = 5
    H = np.full((n, n), 1.0)
    np.fill_diagonal(H, 0.0)
    rng = np.random.default_rng(0)
    res = pr.equipartition_masses(H, 0.2, log_gamma0=rng.normal(size=n))
    assert bool(res.converged)
    np.testing.assert_allclose(np.asarray(res.gamma), 1.0 / n, atol=1e-10)


def test_equipartition_condition_holds_to_1e8(x64):
    rng = np.random.default_rng(1)
    n, m = 12, 5
    H = rng.uniform(0, 1, (n, m))
    H[np.arange(n), rng.integers(0, m, n)] -= 1.0   # every group preferred by some point
    beta = 0.3
    res = pr.equipartition_masses(H, beta)
    assert bool(res.converged)
    g = np.asarray(res.gamma)
    assert g.min() >= 0 and g.sum() == pytest.approx(1.0, abs=1e-14)
    # the condition, recomputed in NumPy
    k = np.exp(-H / beta)
    lhs = (k / (k @ g)[:, None]).sum(0)
    active = g > 1e-10
    assert active.sum() >= 2
    np.testing.assert_allclose(lhs[active], n, rtol=1e-8)
    assert np.all(lhs[~active] <= n * (1 + 1e-8))
    # it is the maximiser of Σ_i ln Σ_a γ_a e^{−H_ia/β} over the simplex
    obj = lambda gam: np.log(k @ gam).sum()
    for _ in range(50):
        other = rng.dirichlet(np.ones(m))
        assert obj(other) <= obj(g) + 1e-12


def _group_level_em(x, centres, log_mass, beta, iters=500):
    """Eq. (15) for the group centres alternated with Proposition 5 for their masses."""
    for _ in range(iters):
        H = ((x[:, None] - centres[None]) ** 2).sum(-1) / 2
        log_mass = np.asarray(pr.equipartition_masses(H, beta, log_gamma0=log_mass).log_gamma)
        lk = -H / beta + log_mass[None]
        r = np.exp(lk - lk.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        centres = (r.T @ x) / r.sum(0)[:, None]
    return centres, log_mass


def test_masses_of_a_converged_fixed_point(x64):
    """Group a converged fixed point by distinct ψ and compare its masses with
    Proposition 5's: on three equal clusters Proposition 5 predicts 1/3 each; the
    grid initialisation's basins give other masses (the condition is violated by
    ~30%); tiles re-assigned with Proposition 5's masses form another fixed point,
    which satisfies the condition up to the tile granularity and has a lower free
    energy (a higher β-ELBO)."""
    x = datasets.three_clusters(60)
    grid = LatentGrid.uniform(12)
    beta = 3e-3
    tight = Damped(damping=0.0, tol=1e-12, max_steps=20_000)
    res = solve(x, [beta], grid, iteration=tight, throw=False)
    psi = np.asarray(res.psi[0])
    groups = pr.group_tiles(psi, grid.log_prior, atol=1e-6)
    assert len(groups.centres) == 3
    H = ((x[:, None] - groups.centres[None]) ** 2).sum(-1) / 2
    eq = pr.equipartition_masses(H, beta, log_gamma0=groups.log_mass)
    assert bool(eq.converged)
    np.testing.assert_allclose(np.asarray(eq.gamma), 1 / 3, atol=2e-3)      # n_a / n
    recovered = np.exp(groups.log_mass)
    k = np.exp(-H / beta)
    cond_rec = (k / (k @ recovered)[:, None]).sum(0) / len(x)
    assert np.abs(cond_rec - 1).max() > 0.1     # the basins' masses are not Prop. 5's
    # Prop. 5 + eq. (15) at the group level, then back to tiles with those masses.
    centres, log_mass = _group_level_em(x, groups.centres, np.asarray(eq.log_gamma), beta)
    gamma = np.exp(log_mass)
    bounds = np.cumsum(gamma)[:-1]
    mid = np.cumsum(grid.prior) - grid.prior / 2
    labels = np.searchsorted(bounds, mid)          # contiguous runs with masses ≈ γ
    psi0 = centres[labels]
    res2 = solve(x, [beta], grid, psi0=psi0, iteration=tight, throw=False)
    psi2 = np.asarray(res2.psi[0])
    g2 = pr.group_tiles(psi2, grid.log_prior, atol=1e-6)
    assert len(g2.centres) == 3
    m2 = np.exp(g2.log_mass)
    assert np.abs(np.sort(m2) - np.sort(gamma)).max() <= 1 / grid.num_tiles   # masses kept
    H2 = ((x[:, None] - g2.centres[None]) ** 2).sum(-1) / 2
    k2 = np.exp(-H2 / beta)
    cond2 = (k2 / (k2 @ m2)[:, None]).sum(0) / len(x)
    assert np.abs(cond2 - 1).max() <= 3 / grid.num_tiles / gamma.min()
    f1 = float(free_energy(psi, x, beta, grid.log_prior))
    f2 = float(free_energy(psi2, x, beta, grid.log_prior))
    assert f2 < f1


def test_equipartition_errors():
    with pytest.raises(ValueError, match="beta"):
        pr.equipartition_masses(np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        pr.equipartition_masses(np.array([[0.0, np.nan]]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        pr.equipartition_masses(np.zeros(3), 1.0)
