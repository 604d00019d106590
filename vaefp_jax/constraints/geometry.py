r"""Geometry of the Lipschitz constraint of Appendix B on a tile basis (NumPy float64).

Notation (σ = 1; β absorbs σ², as in :mod:`vaefp_jax.fixed_point`):

* x (n, d) data, psi (K, d) the decoder on the tiles, log_prior (K,) log π_a;
* q_ia = m_ia π_a (n, K) the tile posterior of eq. (14) (rows sum to one);
* s_a = Σ_i q_ia and s̄_a = s_a / n the *aggregate posterior* mass of tile a
  (Σ_a s̄_a = 1);
* F(ψ) (K, d) the unconstrained map of eq. (15): F_a = Σ_i q_ia x_i / s_a;
* omega (K, K) the multipliers Ω̃_ab ≥ 0, C (K, K) the coefficients C_ab of
  eq. (5), W = Ω̃ ⊙ C the resulting pair weights, Lap(W) = diag(W 1) − W.

Geometry of the tile basis (eq. 5)
----------------------------------
K_ab = ∫∫ φ_a(z) φ_b(z') ‖z − z'‖² dz dz'. For axis-aligned boxes A, B and z, z'
independent and uniform on them, E‖z − z'‖² = Σ_k E(z_k − z'_k)² and
E(z_k − z'_k)² = Var_A,k + Var_B,k + (m_A,k − m_B,k)² (independence), so

    K_ab = |A| |B| Σ_k [Var_A,k + Var_B,k + (m_A,k − m_B,k)²],

with m_A,k the centre and Var_A,k = w_A,k² / 12 the variance of the uniform
distribution on the k-th side of A. On a uniform grid of side w in d_z = 2 this
is |A||B| (‖z_a − z_b‖² + w²/3): K_aa = |A|² w²/3 > 0 (a tile has a spread).
C_ab = π_a π_b / (L² K_ab).

The Normal prior's outer tiles are unbounded (|A| = ∞): the Lebesgue integral
diverges and :func:`tile_kernel` raises. The *prior-weighted* variant replaces
dz dz' by π(z) π(z') dz dz' (the measure under which the constraint (4) is
actually integrated):

    K^π_ab = π_a π_b Σ_k [Var^π_A,k + Var^π_B,k + (m^π_A,k − m^π_B,k)²],

with m^π, Var^π the mean and variance of the standard Normal truncated to the
tile's side (finite for the tail tiles). Then C_ab = 1 / (L² E_ab‖z − z'‖²) —
the inverse mean squared latent distance of the two tiles under the prior. For
the paper's uniform prior on the unit square (π(z) = 1) both variants coincide.
"""

from __future__ import annotations

import numpy as np

from vaefp_jax import _validate
from vaefp_jax.grid import LatentGrid, normal_cdf, normal_pdf

__all__ = ["tile_moments", "tile_kernel", "lipschitz_coefficients", "support_mask", "strength_scale", "SUPPORTS"]

SUPPORTS = ("local", "global")


def _default_weighting(grid: LatentGrid) -> str:
    return "lebesgue" if grid.kind == "uniform" else "prior"


def tile_moments(grid: LatentGrid, weighting: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and variance of z within each tile, each (K, d_z).

    ``weighting="lebesgue"``: z uniform on the (bounded) box; ``"prior"``: z from
    the prior restricted to the tile (uniform grid: the same; Normal grid: the
    truncated standard Normal). Default: lebesgue for uniform grids, prior for
    Normal grids.
    """
    weighting = weighting or _default_weighting(grid)
    lo, hi = np.asarray(grid.lower, np.float64), np.asarray(grid.upper, np.float64)
    if weighting == "lebesgue" or (weighting == "prior" and grid.kind == "uniform"):
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(
                "the Lebesgue tile kernel K_ab = ∫∫ φ_a φ_b ‖z − z'‖² diverges for the "
                "unbounded tail tiles of a Normal grid; use weighting='prior'"
            )
        return 0.5 * (lo + hi), (hi - lo) ** 2 / 12.0
    if weighting != "prior":
        raise ValueError(f"weighting must be 'lebesgue' or 'prior', got {weighting!r}")
    if grid.kind != "gaussian":
        raise ValueError(f"prior weighting needs a 'uniform' or 'gaussian' grid, got {grid.kind!r}")
    # Standard Normal truncated to [lo, hi] per coordinate.
    mass = normal_cdf(hi) - normal_cdf(lo)
    pa, pb = normal_pdf(lo), normal_pdf(hi)
    with np.errstate(invalid="ignore"):
        apa = np.where(np.isfinite(lo), lo * pa, 0.0)
        bpb = np.where(np.isfinite(hi), hi * pb, 0.0)
    mean = (pa - pb) / mass
    var = 1.0 + (apa - bpb) / mass - mean**2
    return mean, np.maximum(var, 0.0)


def _mean_sq_distance(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """E‖z − z'‖² for independent z ~ tile a, z' ~ tile b: (K, K)."""
    diff = mean[:, None, :] - mean[None, :, :]
    return np.sum(var[:, None, :] + var[None, :, :] + diff * diff, axis=-1)


def tile_kernel(grid: LatentGrid, weighting: str | None = None) -> np.ndarray:
    """K_ab of eq. (5), shape (K, K), float64.

    ``"lebesgue"``: K_ab = |A||B| Σ_k [Var_A,k + Var_B,k + (m_A,k − m_B,k)²]
    (bounded tiles only; raises ``ValueError`` for a Normal grid's tail tiles).
    ``"prior"``: the prior-weighted K^π_ab = π_a π_b E_ab‖z − z'‖² (finite for
    every tile). See the module docstring.
    """
    weighting = weighting or _default_weighting(grid)
    mean, var = tile_moments(grid, weighting)
    msd = _mean_sq_distance(mean, var)
    if weighting == "lebesgue":
        vol = np.prod(np.asarray(grid.upper) - np.asarray(grid.lower), axis=1)
        return vol[:, None] * vol[None, :] * msd
    pi = np.exp(np.asarray(grid.log_prior, np.float64))
    return pi[:, None] * pi[None, :] * msd


def lipschitz_coefficients(grid: LatentGrid, L: float = 1.0, weighting: str | None = None) -> np.ndarray:
    """C_ab = π_a π_b / (L² K_ab), shape (K, K), float64 (eq. 5).

    The constraint on the pair (a, b) reads C_ab ‖ψ_a − ψ_b‖² ≤ 1.
    """
    _validate.check_positive("L", L)
    pi = np.exp(np.asarray(grid.log_prior, np.float64))
    return pi[:, None] * pi[None, :] / (float(L) ** 2 * tile_kernel(grid, weighting))


def support_mask(grid: LatentGrid, support: str = "local", r: float = 0.2) -> np.ndarray:
    """Support of the multiplier function Ω(z, z'), (K, K) bool.

    ``"local"``: pairs a ≠ b with ‖z_a − z_b‖ < r (locally Lipschitz within radius
    r); ``"global"``: all pairs a ≠ b (``r`` ignored).
    """
    K = grid.num_tiles
    off = ~np.eye(K, dtype=bool)
    if support == "global":
        return off
    if support != "local":
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    _validate.check_positive("r", r)
    z = np.asarray(grid.z, np.float64)
    dist = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    return off & (dist < float(r))


def strength_scale(grid: LatentGrid, mask: np.ndarray, C: np.ndarray) -> float:
    """The natural unit ω₀ of a constraint strength on this grid.

    With Ω̃ = ω₀ × mask, the smoothing term of the update balances the data term
    on an average tile whose aggregate posterior equals its prior mass:
    mean_a 2 Σ_b ω₀ mask_ab C_ab / π_a = 1. (W scales like K² on a uniform grid,
    so raw strengths are not comparable across grids; strengths in units of ω₀
    roughly are.)
    """
    pi = np.exp(np.asarray(grid.log_prior, np.float64))
    row = (np.asarray(mask, np.float64) * np.asarray(C, np.float64)).sum(axis=1)
    denom = float(np.mean(2.0 * row / pi))
    if denom <= 0:
        raise ValueError("the support mask is empty: no pairs to constrain (increase r)")
    return 1.0 / denom
