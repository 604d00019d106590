r"""Propositions 2–5 of the paper as functions (σ = 1; β absorbs σ²).

Proposition 2 — equiprobable partitions
---------------------------------------
A partition of the tiles among the data, owner(a) = i, defines the encoder
q(z|x_i) = π(z) 1[z ∈ Ω_i] / π_i (Ω_i the union of the tiles of i, π_i its prior
mass): in the tile basis m_ia = 1[owner(a) = i] / π_i and q_ia = m_ia π_a, and the
optimal decoder (eq. 3) is ψ_a = x_owner(a). For distinct data this pair is a fixed
point of eq. (2)–(3) as σ → 0 (here β → 0, :func:`vaefp_jax.fixed_point.step`
returns ψ up to terms e^{−δ²/2β}, δ the smallest distance between data points).
The reconstruction error is then 0 and the negative ELBO reduces to

    E_ρ[KL(q; π)] = −(1/n) Σ_i ln π_i ≥ ln n,

with equality iff the partition is equiprobable (π_i = 1/n: Jensen). At small β the
β-free energy f(ψ) = −(β/n) Σ_i ln c_i of :func:`vaefp_jax.fixed_point.free_energy`
is β E[KL] at this fixed point (c_i → π_i).

Proposition 3 — blurred reconstructions
---------------------------------------
If the supports overlap, eq. (3) gives g(z) = Σ_{i: z ∈ Ω_i} x_i (1/π_i) /
Σ_{j: z ∈ Ω_j} (1/π_j) (eq. 12): :func:`blurred_reconstruction`.

Proposition 4 — kernel-PCA pre-images
-------------------------------------
Mika et al. (1999) compute the pre-image z of a kernel-PCA projection with a
Gaussian kernel k(z, x) = exp(−‖z − x‖² / c) by the fixed-point iteration

    z ← Σ_i γ_i k(z, x_i) x_i / Σ_i γ_i k(z, x_i),

γ_i = Σ_k β_k α_i^k the projection coefficients (β_k the projections of the
point on the leading components, α^k the components' expansion coefficients).
Eq. (15) is exactly this iteration for every tile b, with

* the kernel scale c = 2β, i.e. k(ψ, x) = exp(−‖ψ − x‖² / 2β), a Gaussian of
  standard deviation √β;
* γ_i = 1 / c_i, c_i = Σ_a π_a k(ψ_a, x_i): the kernel *normalised* over the latent
  tiles with the prior, k(ψ_b, x_i) / c_i = m_ib (the encoder of eq. 14).

So with the c_i held fixed, each ψ_b is a fixed point of Mika's iteration with
γ = 1/c (:func:`preimage_coefficients`, :func:`preimage_step`). What differs from
kernel PCA: the γ_i are not obtained from an eigen-decomposition of the Gram
matrix but from all the ψ at once (the K pre-images are coupled through c_i and
re-normalised each step), and they are positive, so each step is a convex
combination of the data — which is why eq. (15) stays in the convex hull of the
data, which Mika's iteration (with γ of either sign) does not guarantee.

Proposition 5 — equipartition of the prior mass
-----------------------------------------------
With the tiles grouped by their distinct reconstructions (m groups, energies
H_ia = ‖x_i − ψ_a‖² / 2, group masses γ_a), maximising the β-ELBO
Σ_i ln Σ_a γ_a e^{−H_ia/β} over the simplex gives Σ_i e^{−H_ia/β} / Σ_b e^{−H_ib/β} γ_b
= n on the groups with γ_a > 0 (and ≤ n where γ_a = 0): :func:`equipartition_masses`
solves it by EM for the mixture weights. The condition is an *optimality*
condition on the masses: a fixed point of eq. (15) from a given initialisation has
whatever masses its basins of attraction give, and need not satisfy it (see the
tests: on three equal clusters the masses from a grid initialisation are
0.38/0.38/0.24, Proposition 5's are 1/3 each; re-assigning tiles to the groups with
the masses of Proposition 5 gives another fixed point with a lower free energy).
Jointly with eq. (15) for the group centres this is EM for a Gaussian mixture with
fixed covariance β I.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from vaefp_jax import _validate
from vaefp_jax.equations import encoder, squared_distances
from vaefp_jax.precision import matmul

__all__ = [
    "PartitionPosterior",
    "equiprobable_partition",
    "partition_posterior",
    "expected_kl",
    "blurred_reconstruction",
    "preimage_coefficients",
    "preimage_step",
    "TileGroups",
    "group_tiles",
    "EquipartitionResult",
    "equipartition_masses",
]


# ---------------------------------------------------------------- Proposition 2


@dataclasses.dataclass(frozen=True)
class PartitionPosterior:
    """The posterior of Proposition 2 for a partition of the tiles.

    Attributes:
      owner: (K,) int, the data point whose support Ω_i holds tile a.
      masses: (n,) π_i = Σ_{owner(a) = i} π_a.
      q: (n, K) q_ia = π_a 1[owner(a) = i] / π_i (rows sum to one).
      psi: (K, d) the optimal decoder ψ_a = x_owner(a) (eq. 9).
    """

    owner: np.ndarray
    masses: np.ndarray
    q: np.ndarray
    psi: np.ndarray


def equiprobable_partition(log_prior, n: int) -> np.ndarray:
    """Assign the K tiles (in grid order) to n data points in contiguous runs of
    prior mass as close to 1/n as the tiles allow: tile a goes to
    floor(n × (mass before a + π_a / 2)). Exactly equiprobable on a uniform grid
    when n divides K. Returns owner (K,) int.
    """
    _validate.check_log_prior(log_prior)
    pi = np.exp(np.asarray(log_prior, np.float64))
    K = pi.shape[0]
    if isinstance(n, bool) or int(n) != n or n < 1 or n > K:
        raise ValueError(f"n must be an integer in [1, K={K}], got {n!r}")
    mid = np.cumsum(pi) - pi / 2
    owner = np.minimum((mid * n).astype(int), n - 1)
    if len(np.unique(owner)) != n:
        raise ValueError("some data point gets no tile: use a finer grid")
    return owner


def partition_posterior(x, owner, log_prior) -> PartitionPosterior:
    """The fixed point of Proposition 2 for a partition ``owner`` (K,) of the tiles
    among the n data points x (n, d) (every point must own at least one tile)."""
    _validate.check_data(x)
    _validate.check_log_prior(log_prior)
    x = np.asarray(x, np.float64)
    owner = np.asarray(owner)
    n, K = x.shape[0], np.shape(log_prior)[0]
    if owner.shape != (K,) or not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"owner must be an integer array of shape ({K},), got {owner.shape} {owner.dtype}")
    if owner.min() < 0 or owner.max() >= n:
        raise ValueError(f"owner values must lie in [0, {n})")
    pi = np.exp(np.asarray(log_prior, np.float64))
    member = owner[None, :] == np.arange(n)[:, None]          # (n, K)
    masses = (member * pi[None]).sum(1)
    if np.any(masses <= 0):
        raise ValueError("every data point needs a support of positive prior mass")
    q = member * pi[None] / masses[:, None]
    return PartitionPosterior(owner=owner, masses=masses, q=q, psi=x[owner])


def expected_kl(masses) -> float:
    """E_ρ[KL(q; π)] = −(1/n) Σ_i ln π_i for the partition posterior (Prop. 2),
    the negative ELBO at σ → 0; ln n for an equiprobable partition."""
    masses = np.asarray(masses, np.float64)
    if masses.ndim != 1 or np.any(masses <= 0) or masses.sum() > 1 + 1e-9:
        raise ValueError("masses must be positive prior masses π_i of disjoint supports")
    return float(-np.mean(np.log(masses)))


# ---------------------------------------------------------------- Proposition 3


def blurred_reconstruction(z_memberships: ArrayLike, prior_masses: ArrayLike, x: ArrayLike) -> np.ndarray:
    """The optimal decoder of Proposition 3 (eq. 12) where supports overlap.

    Args:
      z_memberships: (M, n) bool, whether latent point m lies in Ω_i.
      prior_masses: (n,) π_i > 0, the prior mass of each support.
      x: (n, d) data.

    Returns:
      (M, d): g(z) = Σ_{i: z ∈ Ω_i} x_i/π_i / Σ_{j: z ∈ Ω_j} 1/π_j. A point in no
      support (a *hole*) leaves the decoder unconstrained: its row is NaN.
    """
    _validate.check_data(x)
    x = np.asarray(x, np.float64)
    member = np.asarray(z_memberships, bool)
    pm = np.asarray(prior_masses, np.float64)
    n = x.shape[0]
    if member.ndim != 2 or member.shape[1] != n:
        raise ValueError(f"z_memberships must have shape (M, {n}), got {member.shape}")
    if pm.shape != (n,) or not np.all(np.isfinite(pm)) or np.any(pm <= 0):
        raise ValueError(f"prior_masses must be {n} positive finite numbers")
    w = member / pm[None, :]
    total = w.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w @ x) / total, np.nan)


# ---------------------------------------------------------------- Proposition 4


def preimage_coefficients(psi, x, beta, log_prior) -> jax.Array:
    """log γ_i = −log c_i, c_i = Σ_a π_a exp(−‖x_i − ψ_a‖² / 2β): the kernel-PCA
    projection coefficients γ_i = 1/c_i of eq. (15) read as Mika's pre-image
    iteration (Proposition 4). Shape (n,)."""
    _validate.check_data(x)
    _validate.check_psi(psi, x)
    _validate.check_beta(beta)
    _validate.check_log_prior(log_prior, num_tiles=np.shape(psi)[0])
    psi, x = jnp.asarray(psi), jnp.asarray(x)
    return -encoder(psi, x, jnp.asarray(beta, psi.dtype), jnp.asarray(log_prior, psi.dtype))[1]  # −log c_i, eq. (14)


def preimage_step(z, x, log_gamma, beta) -> jax.Array:
    """One step of Mika et al.'s Gaussian-kernel pre-image iteration for each row
    of z (M, d): z ← Σ_i γ_i k(z, x_i) x_i / Σ_i γ_i k(z, x_i) with
    k(z, x) = exp(−‖z − x‖² / 2β) (scale √β), γ = exp(log_gamma) (n,); in log space."""
    _validate.check_data(x)
    _validate.check_psi(z, x, name="z")
    _validate.check_beta(beta)
    if np.shape(log_gamma) != (np.shape(x)[0],):
        raise ValueError(f"log_gamma must have shape ({np.shape(x)[0]},), got {np.shape(log_gamma)}")
    z, x = jnp.asarray(z), jnp.asarray(x)
    logits = jnp.asarray(log_gamma)[None, :] - squared_distances(z, x) / (2 * beta)   # (M, n)
    return matmul(jax.nn.softmax(logits, axis=1), x)


# ---------------------------------------------------------------- Proposition 5


@dataclasses.dataclass(frozen=True)
class TileGroups:
    """Tiles grouped by their distinct reconstruction ψ_a.

    Attributes:
      labels: (K,) group of each tile; centres: (m, d) the group's ψ (mean of its
      tiles'); log_mass: (m,) log γ_a, the prior mass of the group.
    """

    labels: np.ndarray
    centres: np.ndarray
    log_mass: np.ndarray


def group_tiles(psi, log_prior, atol: float = 1e-5) -> TileGroups:
    """Group the tiles of a converged decoder ψ (K, d) by distinct value: tiles
    whose ψ lie within ``atol`` of a group's first tile join it (greedy, in tile
    order)."""
    psi = np.asarray(psi, np.float64)
    lp = np.asarray(log_prior, np.float64)
    if psi.ndim != 2 or lp.shape != (psi.shape[0],):
        raise ValueError("psi must be (K, d) and log_prior (K,)")
    labels = -np.ones(psi.shape[0], int)
    firsts: list[int] = []
    for a in range(psi.shape[0]):
        if labels[a] >= 0:
            continue
        close = (labels < 0) & (np.linalg.norm(psi - psi[a], axis=1) <= atol)
        labels[close] = len(firsts)
        firsts.append(a)
    m = len(firsts)
    centres = np.stack([psi[labels == g].mean(0) for g in range(m)])
    log_mass = np.array([np.logaddexp.reduce(lp[labels == g]) for g in range(m)])
    return TileGroups(labels=labels, centres=centres, log_mass=log_mass)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["gamma", "log_gamma", "condition", "steps", "residual", "converged"],
    meta_fields=["tol"],
)
@dataclasses.dataclass(frozen=True)
class EquipartitionResult:
    """What :func:`equipartition_masses` returns.

    Attributes:
      gamma, log_gamma: (m,) the masses γ_a (Σ γ = 1) and their logs.
      condition: (m,) (1/n) Σ_i e^{−H_ia/β} / Σ_b e^{−H_ib/β} γ_b: 1 where γ_a > 0,
        ≤ 1 where γ_a → 0 (the KKT conditions of the ELBO over the simplex).
      steps: EM iterations; residual: max_a γ_a-weighted violation (see below);
      converged: residual < tol.
    """

    gamma: jax.Array
    log_gamma: jax.Array
    condition: jax.Array
    steps: jax.Array
    residual: jax.Array
    converged: jax.Array
    tol: float


def _condition(log_k, log_gamma):
    """(1/n) Σ_i r_ia with r_ia = e^{ℓ_ia} / Σ_b e^{ℓ_ib} γ_b, in log space: (m,)."""
    log_r = log_k - logsumexp(log_k + log_gamma[None, :], axis=1, keepdims=True)
    return jnp.exp(logsumexp(log_r, axis=0) - jnp.log(log_k.shape[0]))


def _kkt_residual(cond, log_gamma, floor):
    """|cond − 1| on the groups with γ_a > floor, max(cond − 1, 0) elsewhere."""
    active = log_gamma > jnp.log(floor)
    return jnp.max(jnp.where(active, jnp.abs(cond - 1.0), jnp.maximum(cond - 1.0, 0.0)))


@functools.partial(jax.jit, static_argnames=("max_steps",))
def _em(log_k, log_gamma0, tol, floor, max_steps):
    def cond_fn(state):
        lg, t, res = state
        return (t < max_steps) & (res >= tol)

    def body(state):
        lg, t, _ = state
        c = _condition(log_k, lg)
        lg = lg + jnp.log(c)                      # γ_a ← γ_a (1/n) Σ_i r_ia  (EM)
        lg = lg - logsumexp(lg)                   # keep Σγ = 1 exactly
        res = _kkt_residual(_condition(log_k, lg), lg, floor)
        return lg, t + 1, res

    init = (log_gamma0, jnp.int32(0), _kkt_residual(_condition(log_k, log_gamma0), log_gamma0, floor))
    return jax.lax.while_loop(cond_fn, body, init)


def equipartition_masses(H: ArrayLike, beta: ArrayLike, *, log_gamma0: ArrayLike | None = None,
                         tol: float | None = None, max_steps: int = 200_000,
                         floor: float = 1e-12) -> EquipartitionResult:
    """Solve Σ_i e^{−H_ia/β} / Σ_b e^{−H_ib/β} γ_b = n for the masses γ (Prop. 5).

    EM for mixture weights with fixed components e^{−H_ia/β}, in log space:
    log γ_a ← log γ_a + log((1/n) Σ_i r_ia), renormalised. It increases the concave
    objective Σ_i ln Σ_a γ_a e^{−H_ia/β} (the β-ELBO as a function of the masses)
    and converges to its maximiser on the simplex, where the condition holds for
    every γ_a > 0 and (1/n) Σ_i r_ia ≤ 1 for γ_a = 0 (groups that lose all mass
    decay geometrically; ``floor`` separates the two when measuring the
    residual).

    Args:
      H: (n, m) energies H_ia (e.g. ‖x_i − ψ_a‖²/2 for the distinct ψ_a).
      beta: β > 0.
      log_gamma0: (m,) initial log masses (default uniform).
      tol: on the KKT residual (default 1e-12 in float64, 1e-6 in float32).
    """
    if np.ndim(H) != 2 or 0 in np.shape(H):
        raise ValueError(f"H must have shape (n, m), got {np.shape(H)}")
    _validate.check_finite("H", H)
    _validate.check_beta(beta)
    H = jnp.asarray(H)
    dtype = H.dtype if jnp.issubdtype(H.dtype, jnp.floating) else jnp.float32
    H = H.astype(dtype)
    m = H.shape[1]
    if log_gamma0 is None:
        log_gamma0 = jnp.full((m,), -jnp.log(m), dtype)
    else:
        if np.shape(log_gamma0) != (m,):
            raise ValueError(f"log_gamma0 must have shape ({m},)")
        _validate.check_finite("log_gamma0", log_gamma0)
        log_gamma0 = jnp.asarray(log_gamma0, dtype)
        log_gamma0 = log_gamma0 - logsumexp(log_gamma0)
    tol_ = float(tol) if tol is not None else (1e-12 if dtype == jnp.float64 else 1e-6)
    log_k = -H / jnp.asarray(beta, dtype)
    lg, steps, res = _em(log_k, log_gamma0, jnp.asarray(tol_, dtype), jnp.asarray(floor, dtype),
                         max_steps=int(max_steps))
    return EquipartitionResult(gamma=jnp.exp(lg), log_gamma=lg, condition=_condition(log_k, lg),
                               steps=steps, residual=res, converged=res < tol_, tol=tol_)
