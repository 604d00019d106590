r"""Lipschitz-constrained high-capacity β-VAEs (Appendix B, Proposition 6).

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

The projected update (Proposition 6, corrected)
-----------------------------------------------
With q fixed, the ψ-dependent part of the augmented Lagrangian is eq. (18) with
the constraint term of eq. (5):

    ℒ(ψ) = (1/n) Σ_ia q_ia ‖x_i − ψ_a‖² / 2  +  ½ Σ_ab W_ab ‖ψ_a − ψ_b‖²,   (*)

summing over *ordered* pairs (a, b) with Ω̃ symmetric (only the symmetric part
of W enters (*), so we symmetrise W). Differentiating, each unordered pair
appears twice, so

    ∂ℒ/∂ψ_a = (1/n) Σ_i q_ia (ψ_a − x_i) + 2 Σ_b W_ab (ψ_a − ψ_b) = 0

    ⇔ (diag(s) + 2n Lap(W)) ψ = qᵀ x = diag(s) F(ψ^t)
    ⇔ (diag(s̄) + 2 Lap(W)) ψ = diag(s̄) F(ψ^t).

Hence ψ^{t+1} = A F(ψ^t) with A = (diag(s̄) + 2 Lap(W))⁻¹ diag(s̄)
= (I + 2 diag(1/s̄) Lap(W))⁻¹ in our (K, d) layout, or in the paper's layout
(ψ a d × K matrix, ψ^{t+1} = F(ψ^t) P^t, ψ_b = Σ_a F_a P_ab):

    P = Aᵀ = [I + 2n (diag(1ᵀ(Ω̃ ⊙ C)) − Ω̃ ⊙ C) diag(1 / (1ᵀ m ⊙ π))]⁻¹
           = diag(s̄) (diag(s̄) + 2 Lap(W))⁻¹.

With a global σ put σ² in front of the 2n. Compared with the printed P of
Appendix C.6: the sign in front of the Laplacian is +, not − (eq. (19) has the
sign of the constraint gradient flipped); the factor is 2nσ², the 2 coming from
the ordered-pair sum; and the diagonal scaling multiplies the Laplacian on the
right in the paper's layout. The factor n is there because the constraint term of
eq. (5) is not divided by n while the data term of eq. (18) is; with the
1/(2n) printed in eq. (16) the n disappears, i.e. that convention is ours with
Ω̃ → Ω̃/n. We use (*), so that the strength of the constraint does not depend on
the number of data points.

Properties: diag(s̄) + 2 Lap(W) is a symmetric M-matrix (positive definite when
every connected component of the support graph holds a tile with s̄_a > 0), so A
is entrywise ≥ 0 with rows summing to one (Lap 1 = 0): each ψ_a^{t+1} is a convex
combination of the F_b — a smoothing operator, exactly F when W = 0. With the
printed minus sign, I − 2 diag(1/s̄) Lap has negative eigenvalues as soon as the
constraint is strong, and its inverse is not a smoothing operator. The update is
the weighted projection argmin_ψ Σ_a s̄_a ‖ψ_a − F_a‖² + 2·½ΣW‖ψ_a − ψ_b‖² (since
Σ_i q_ia ‖x_i − ψ_a‖² = s_a ‖ψ_a − F_a‖² + const), so alternating it with the
encoder update (14) is coordinate descent on the penalised free energy and never
increases it: the iteration converges without damping.

Tiles in *holes* (s̄_a ≈ 0, no data nearby) are then determined by their
neighbours: the constraint fills the holes of Section 2.1 by harmonic
interpolation.

Two modes
---------
* **strength mode** (the paper's Figure 4): Ω̃ = strength × support mask, fixed.
  :func:`lipschitz_step`, :func:`solve_lipschitz` (batched over β and strength,
  one jitted ``vmap`` of :func:`vaefp_jax.solver.iterate`) and
  :func:`lipschitz_fixed_point` (differentiable in β and Ω̃ by implicit
  differentiation). Only W = Ω̃ ⊙ C matters, so L merely rescales the strength.
  :func:`strength_scale` gives the natural unit of strength of a grid.
* **constraint mode** (beyond the paper): a given L, the hard bound
  C_ab ‖ψ_a − ψ_b‖² ≤ 1 on the support. Each step replaces F by its s̄-weighted
  projection on the (convex) Lipschitz set, computed by a barrier (interior-point)
  method; the multipliers are the barrier's Ω̃_ab = μ/(−h_ab) ≥ 0, with which the
  fixed point satisfies ψ = Pᵀ F(ψ) exactly and complementary slackness to μ.
  (Plain projected dual ascent Ω̃ ← [Ω̃ + η g]₊ oscillates here: see
  :func:`solve_lipschitz_constraint` and docs/lipschitz.md.)
  :func:`solve_lipschitz_constraint`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate, linalg
from vaefp_jax.fixed_point import _step, squared_distances
from vaefp_jax.grid import LatentGrid, _normal_cdf, _normal_pdf
from vaefp_jax.implicit import dense_solve, implicit_fixed_point
from vaefp_jax.solver import Protocol, initial_batch, iterate

__all__ = [
    "tile_moments",
    "tile_kernel",
    "lipschitz_coefficients",
    "support_mask",
    "strength_scale",
    "pair_weights",
    "laplacian",
    "projection_operator",
    "project",
    "lipschitz_step",
    "violation",
    "LipschitzResult",
    "solve_lipschitz",
    "lipschitz_fixed_point",
    "ConstraintResult",
    "solve_lipschitz_constraint",
]

SUPPORTS = ("local", "global")


# --------------------------------------------------------------------------
# Geometry of the tile basis (NumPy float64)
# --------------------------------------------------------------------------


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
    mass = _normal_cdf(hi) - _normal_cdf(lo)
    pa, pb = _normal_pdf(lo), _normal_pdf(hi)
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


# --------------------------------------------------------------------------
# The projected update (JAX)
# --------------------------------------------------------------------------


def pair_weights(omega, C):
    """W = sym(Ω̃ ⊙ C), (K, K): only the symmetric part of W enters eq. (18)."""
    W = omega * C
    return 0.5 * (W + W.T)


def laplacian(W):
    """Lap(W) = diag(W 1) − W, (K, K), for a symmetric W ≥ 0."""
    return jnp.diag(jnp.sum(W, axis=1)) - W


def project(psi_f, s_bar, W):
    """Solve (diag(s̄) + 2 Lap(W)) ψ = diag(s̄) F for ψ, (K, d).

    Written as ψ = F + δ, (diag(s̄) + 2 Lap) δ = −2 Lap F, so that W = 0 gives
    exactly ψ = F (bit for bit), also where s̄ underflows to 0.

    Args:
      psi_f: (K, d) F(ψ^t), the unconstrained update.
      s_bar: (K,) aggregate posterior masses s̄_a = (1/n) Σ_i q_ia.
      W: (K, K) symmetric pair weights Ω̃ ⊙ C.
    """
    lap = laplacian(W)
    active = jnp.any(W != 0)
    M = jnp.diag(s_bar) + 2.0 * lap
    M = jnp.where(active, M, jnp.eye(M.shape[0], dtype=M.dtype))
    delta = linalg.solve(M, -2.0 * lap @ psi_f)
    return psi_f + delta


def projection_operator(s_bar, W):
    """P of Proposition 6 in the paper's layout: ψ^{t+1}_b = Σ_a F_a P_ab, (K, K).

    P = [I + 2 Lap(W) diag(1/s̄)]⁻¹ = diag(s̄) (diag(s̄) + 2 Lap(W))⁻¹; in the
    (K, d) layout ψ^{t+1} = Pᵀ F(ψ^t). Columns of P sum to one and P ≥ 0.
    """
    M = jnp.diag(s_bar) + 2.0 * laplacian(W)
    return jnp.diag(s_bar) @ linalg.solve(M, jnp.eye(M.shape[0], dtype=M.dtype))


def _aggregate_posterior(psi, x, beta, log_prior):
    """s̄_a = (1/n) Σ_i q_ia, (K,)."""
    logits = -squared_distances(x, psi) / (2 * beta) + log_prior[None, :]
    return jnp.mean(jax.nn.softmax(logits, axis=1), axis=0)


def _lipschitz_step(psi, x, beta, log_prior, W):
    psi_f = _step(psi, x, beta, log_prior)
    return project(psi_f, _aggregate_posterior(psi, x, beta, log_prior), W)


def _violation(psi, C, mask):
    """g_ab = C_ab ‖ψ_a − ψ_b‖² − 1 on the support, −inf elsewhere; (K, K)."""
    sq = squared_distances(psi, psi)
    return jnp.where(mask, C * sq - 1.0, -jnp.inf)


def _cast_all(dtype, *arrays):
    return tuple(jnp.asarray(a, dtype) for a in arrays)


def _working_dtype(x):
    dtype = jnp.result_type(x, jnp.float32)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


def _check_matrix(name, a, K, nonneg=True):
    if np.shape(a) != (K, K):
        raise ValueError(f"{name} must have shape ({K}, {K}), got {np.shape(a)}")
    _validate.check_finite(name, a)
    if nonneg and _validate.is_concrete(a) and np.any(np.asarray(a) < 0):
        raise ValueError(f"{name} must be ≥ 0 (Lagrange multipliers of an inequality)")


def lipschitz_step(psi, x, beta, log_prior, omega, C):
    """One constrained update ψ^{t+1} = Pᵀ F(ψ^t) (Proposition 6, corrected).

    Args:
      psi: (K, d) decoder on the tiles.
      x: (n, d) data.
      beta: scalar β > 0.
      log_prior: (K,) log π_a.
      omega: (K, K) multipliers Ω̃_ab ≥ 0 (symmetrised).
      C: (K, K) coefficients C_ab (:func:`lipschitz_coefficients`).

    Returns (K, d). With omega = 0 this is exactly :func:`vaefp_jax.fixed_point.step`.
    """
    _validate.check_data(x)
    _validate.check_psi(psi, x)
    _validate.check_beta(beta)
    K = np.shape(psi)[0]
    _validate.check_log_prior(log_prior, num_tiles=K)
    _check_matrix("omega", omega, K)
    _check_matrix("C", C, K)
    dtype = _working_dtype(jnp.result_type(psi, x))
    psi, x, beta, log_prior, omega, C = _cast_all(dtype, psi, x, beta, log_prior, omega, C)
    return _lipschitz_step(psi, x, beta, log_prior, pair_weights(omega, C))


def violation(psi, C, mask) -> jax.Array:
    """max over the support of C_ab ‖ψ_a − ψ_b‖² − 1 (≤ 0: the constraint holds).

    psi (K, d) or (B, K, d); returns a scalar or (B,)."""
    psi = jnp.asarray(psi)
    f = lambda p: jnp.max(_violation(p, jnp.asarray(C, p.dtype), jnp.asarray(mask)))
    return f(psi) if psi.ndim == 2 else jax.vmap(f)(psi)


# --------------------------------------------------------------------------
# Strength mode
# --------------------------------------------------------------------------


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["beta", "strength", "psi", "steps", "converged", "residual", "trajectory"],
    meta_fields=["tol", "support", "r", "L"],
)
@dataclasses.dataclass(frozen=True)
class LipschitzResult:
    """What :func:`solve_lipschitz` returns (a pytree); B problems.

    Attributes:
      beta: (B,) β of each problem.
      strength: (B,) multiplier strength (Ω̃ = strength × support mask).
      psi: (B, K, d) the last iterate (the constrained fixed point where ``converged``).
      steps: (B,) int32 map evaluations.
      converged: (B,) bool, ``residual < tol`` with ψ finite.
      residual: (B,) ‖ψ^t − ψ^{t−1}‖_F at the last step.
      trajectory: (B, T, K, d) ψ every ``record_every`` steps, or ``None``.
      tol, support, r, L: the settings used.
    """

    beta: jax.Array
    strength: jax.Array
    psi: jax.Array
    steps: jax.Array
    converged: jax.Array
    residual: jax.Array
    trajectory: jax.Array | None
    tol: float
    support: str
    r: float
    L: float

    def warn_if_not_converged(self, stacklevel: int = 2) -> None:
        conv = np.asarray(self.converged)
        if conv.all():
            return
        bad = [(float(b), float(s)) for b, s, c in
               zip(np.asarray(self.beta), np.asarray(self.strength), conv) if not c]
        shown = ", ".join(f"(β={b:.3g}, strength={s:.3g})" for b, s in bad[:6])
        warnings.warn(f"{len(bad)} of {conv.size} problems did not converge to tol={self.tol:g}: "
                      f"{shown}{', …' if len(bad) > 6 else ''}", RuntimeWarning,
                      stacklevel=stacklevel + 1)


def _broadcast_problems(betas, other, other_name):
    """β (B,) or scalar and another per-problem scalar → two (B,) float64 arrays."""
    b = np.atleast_1d(np.asarray(betas, np.float64))
    o = np.atleast_1d(np.asarray(other, np.float64))
    if b.ndim != 1 or o.ndim != 1:
        raise ValueError(f"betas and {other_name} must be scalars or 1-D, got shapes "
                         f"{np.shape(betas)} and {np.shape(other)}")
    try:
        b, o = np.broadcast_arrays(b, o)
    except ValueError:
        raise ValueError(f"betas {b.shape} and {other_name} {o.shape} do not broadcast") from None
    _validate.check_beta(b, name="betas", batched=True)
    if not np.all(np.isfinite(o)):
        raise ValueError(f"{other_name} contains NaN or inf")
    return b, o


def _resolve_protocol(protocol, damping, tol, max_steps):
    return (protocol or Protocol.paper()).with_overrides(damping, tol, max_steps)


def _initial(x, grid, psi0, protocol, key, B, dtype):
    return initial_batch(x, grid, psi0, protocol.init_noise, key, B, dtype)


def _geometry(grid, support, r, L, weighting):
    C = lipschitz_coefficients(grid, L, weighting)
    mask = support_mask(grid, support, r)
    return C, mask


@functools.partial(jax.jit, static_argnames=("max_steps", "record_every"))
def _solve_strength_batched(x, betas, strengths, log_prior, base, psi0, damping, tol,
                            max_steps, record_every):
    def one(beta, strength, p0):
        W = strength * base
        F = lambda psi: _lipschitz_step(psi, x, beta, log_prior, W)
        return iterate(F, p0, damping, tol, max_steps, record_every)

    if jax.default_backend() == "cpu":
        # One problem at a time: each stops at its own step count (a vmapped loop
        # runs every lane to the slowest), and on CPU the K × K solve of every step
        # is one LAPACK call per problem anyway (vaefp_jax.linalg).
        psi, steps, res, traj = jax.lax.map(lambda a: one(*a), (betas, strengths, psi0))
    else:
        psi, steps, res, traj = jax.vmap(one)(betas, strengths, psi0)
    converged = (res < tol) & jnp.all(jnp.isfinite(psi), axis=(1, 2))
    return psi, steps, res, converged, traj


def solve_lipschitz(
    x,
    betas,
    grid: LatentGrid,
    strength=0.0,
    *,
    support: str = "local",
    r: float = 0.2,
    L: float = 1.0,
    weighting: str | None = None,
    psi0=None,
    protocol: Protocol | None = None,
    damping: float | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    key=None,
    record_every: int = 0,
    warn: bool = True,
) -> LipschitzResult:
    """Constrained fixed points in strength mode, for all problems in one jitted call.

    Problem b iterates ψ ← (1 − damping) Pᵀ F(ψ) + damping ψ with multipliers
    Ω̃ = strength_b × support mask, i.e. pair weights W = strength_b (mask ⊙ C).

    Args:
      x: (n, d) data (its dtype sets the precision).
      betas: scalar or (B,) β > 0; broadcast against ``strength``.
      grid: the tile basis.
      strength: scalar or (B,) multiplier strength ≥ 0 (in units of Ω̃; see
        :func:`strength_scale` for a grid's natural unit). 0 reproduces
        :func:`vaefp_jax.solver.solve` exactly.
      support: ``"local"`` (pairs closer than ``r``) or ``"global"``.
      L: the Lipschitz constant in C_ab (only W = Ω̃ C matters here).
      weighting: ``"lebesgue"``/``"prior"`` for K_ab (default by grid kind).
      psi0, protocol, damping, tol, max_steps, key, record_every, warn: as in
        :func:`vaefp_jax.solver.solve`.
    """
    protocol = _resolve_protocol(protocol, damping, tol, max_steps)
    _validate.check_data(x)
    _validate.check_log_prior(grid.log_prior)
    betas, strengths = _broadcast_problems(betas, strength, "strength")
    if np.any(strengths < 0):
        raise ValueError(f"strength must be ≥ 0, got min {strengths.min()}")
    if int(record_every) != record_every or record_every < 0:
        raise ValueError(f"record_every must be an integer ≥ 0, got {record_every}")
    C, mask = _geometry(grid, support, r, L, weighting)
    dtype = _working_dtype(np.asarray(x).dtype)
    x = jnp.asarray(x, dtype)
    B = betas.shape[0]
    psi0 = _initial(x, grid, psi0, protocol, key, B, dtype)
    tol_ = protocol.resolved_tol(dtype)
    base = jnp.asarray(np.where(mask, C, 0.0), dtype)
    psi, steps, res, converged, traj = _solve_strength_batched(
        x, jnp.asarray(betas, dtype), jnp.asarray(strengths, dtype),
        jnp.asarray(grid.log_prior, dtype), base, psi0,
        jnp.asarray(protocol.damping, dtype), jnp.asarray(tol_, dtype),
        max_steps=int(protocol.max_steps), record_every=int(record_every))
    result = LipschitzResult(beta=jnp.asarray(betas, dtype), strength=jnp.asarray(strengths, dtype),
                             psi=psi, steps=steps, converged=converged, residual=res,
                             trajectory=traj, tol=tol_, support=support, r=float(r), L=float(L))
    if warn:
        result.warn_if_not_converged(stacklevel=2)
    return result


def lipschitz_fixed_point(x, beta, log_prior, omega, C, psi0, *, tol: float = 1e-12,
                          max_steps: int = 20_000, damping: float = 0.0):
    """The strength-mode fixed point ψ*(β, Ω̃), (K, d), differentiable in β and Ω̃.

    ψ* = Pᵀ(ψ*) F(ψ*) is found by iterating from ``psi0``; derivatives (any order,
    forward or reverse) come from the implicit function theorem through
    :func:`vaefp_jax.implicit.implicit_fixed_point` (dense linear solve), never by
    unrolling the loop. Valid away from transitions, where I − ∂(PᵀF)/∂ψ is
    invertible. Jit-compatible (no value checks on tracers).

    Args:
      x: (n, d); beta: scalar; log_prior: (K,); omega, C: (K, K); psi0: (K, d).
    """
    dtype = _working_dtype(jnp.result_type(x, psi0))
    x, log_prior, C, psi0 = _cast_all(dtype, x, log_prior, C, psi0)

    def F(psi, theta):
        return _lipschitz_step(psi, x, theta["beta"], log_prior, pair_weights(theta["omega"], C))

    def solve(theta):
        psi, _, _, _ = iterate(lambda p: F(p, theta), psi0, jnp.asarray(damping, dtype),
                               jnp.asarray(tol, dtype), max_steps, 0)
        return psi

    theta = {"beta": jnp.asarray(beta, dtype), "omega": jnp.asarray(omega, dtype)}
    return implicit_fixed_point(F, solve, theta, linear_solve=dense_solve)


# --------------------------------------------------------------------------
# Constraint mode
# --------------------------------------------------------------------------


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["beta", "L", "psi", "omega", "steps", "converged", "feasible",
                 "max_violation", "residual"],
    meta_fields=["tol", "feas_tol", "support", "r"],
)
@dataclasses.dataclass(frozen=True)
class ConstraintResult:
    """What :func:`solve_lipschitz_constraint` returns (a pytree); B problems.

    Attributes:
      beta: (B,) β; L: (B,) Lipschitz constant.
      psi: (B, K, d) the last iterate.
      omega: (B, K, K) the multipliers Ω̃ ≥ 0 found (symmetric, zero off the
        support and on pairs where the constraint is slack).
      steps: (B,) int32 outer iterations (map evaluations).
      converged: (B,) bool: ψ moved less than ``tol`` in the last step *and*
        the bound holds to ``feas_tol`` (a KKT point to those tolerances).
      feasible: (B,) bool: max_violation ≤ feas_tol.
      max_violation: (B,) max over the support of C_ab ‖ψ_a − ψ_b‖² − 1 (≤ 0 when
        the bound holds).
      residual: (B,) ‖ψ^t − ψ^{t−1}‖_F at the last step.
    """

    beta: jax.Array
    L: jax.Array
    psi: jax.Array
    omega: jax.Array
    steps: jax.Array
    converged: jax.Array
    feasible: jax.Array
    max_violation: jax.Array
    residual: jax.Array
    tol: float
    feas_tol: float
    support: str
    r: float

    def warn_if_not_converged(self, stacklevel: int = 2) -> None:
        conv = np.asarray(self.converged)
        if conv.all():
            return
        bad = [(float(b), float(l), float(v)) for b, l, v, c in
               zip(np.asarray(self.beta), np.asarray(self.L), np.asarray(self.max_violation), conv)
               if not c]
        shown = ", ".join(f"(β={b:.3g}, L={l:.3g}, violation={v:.2g})" for b, l, v in bad[:6])
        warnings.warn(f"{len(bad)} of {conv.size} constrained problems did not converge "
                      f"(tol={self.tol:g}, feas_tol={self.feas_tol:g}): {shown}"
                      f"{', …' if len(bad) > 6 else ''}", RuntimeWarning, stacklevel=stacklevel + 1)


def _barrier_value(psi, psi_f, s_bar, C, mask, mu):
    """φ_μ(ψ) = ½ Σ_a s̄_a ‖ψ_a − F_a‖² − μ Σ_{a<b} log(−h_ab); +inf when infeasible."""
    h = jnp.where(mask, C * squared_distances(psi, psi) - 1.0, -1.0)
    barrier = -0.5 * jnp.sum(jnp.where(mask, jnp.log(jnp.maximum(-h, 1e-300)), 0.0))
    val = 0.5 * jnp.sum(s_bar[:, None] * (psi - psi_f) ** 2) + mu * barrier
    return jnp.where(jnp.all(h < 0), val, jnp.inf)


def _max_feasible_step(psi, delta, C, mask):
    """Largest α with h_ab(ψ + α δ) < 0 for all pairs: min over pairs of the
    positive root of C‖Δ + α D‖² − 1 (Δ, D the pair differences of ψ, δ)."""
    diff = psi[:, None, :] - psi[None, :, :]
    dd = delta[:, None, :] - delta[None, :, :]
    a = C * jnp.sum(dd * dd, axis=-1)
    b = 2.0 * C * jnp.sum(diff * dd, axis=-1)
    c = C * jnp.sum(diff * diff, axis=-1) - 1.0          # < 0 at a feasible ψ
    disc = jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))
    denom = b + disc
    root = jnp.where(denom > 0, 2.0 * (-c) / jnp.where(denom > 0, denom, 1.0), jnp.inf)
    return jnp.min(jnp.where(mask, root, jnp.inf))


def _barrier_newton(psi, psi_f, s_bar, C, mask, mu, max_newton, n_backtrack=30):
    """Newton's method on the log-barrier problem

        min_ψ  φ_μ(ψ) = ½ Σ_a s̄_a ‖ψ_a − F_a‖²  −  μ Σ_{a<b on the support} log(−h_ab(ψ)),
        h_ab = C_ab ‖ψ_a − ψ_b‖² − 1,

    from a strictly feasible ψ (K, d), with a fraction-to-the-boundary rule (the
    largest feasible step is exact: h is quadratic along the direction) and
    Armijo backtracking, so every iterate is strictly feasible and φ_μ decreases.
    Stops when the step is at the rounding level or the Newton decrement
    λ² = −∇φ·δ / μ is below 1e-14 (or after ``max_newton`` steps). The Hessian is a block Laplacian with (d, d) pair
    weights w I + v ΔΔᵀ plus diag(s̄), assembled densely: (K d)² entries (meant
    for K up to a few hundred).
    """
    K, d = psi.shape
    eye = jnp.eye(d, dtype=psi.dtype)
    maskf = mask.astype(psi.dtype)
    alphas = 0.5 ** jnp.arange(n_backtrack, dtype=psi.dtype)
    phi = lambda p: _barrier_value(p, psi_f, s_bar, C, mask, mu)

    step_tol = 100 * jnp.finfo(psi.dtype).eps * (1.0 + jnp.max(jnp.abs(psi_f)))

    def cond(state):
        psi, it, moved = state
        return (it < max_newton) & (moved > step_tol)

    def newton(state):
        psi, it, _ = state
        diff = psi[:, None, :] - psi[None, :, :]                      # Δ_ab, (K, K, d)
        h = jnp.where(mask, C * jnp.sum(diff * diff, axis=-1) - 1.0, -1.0)
        w = 2.0 * mu * C * maskf / (-h)                                # (K, K)
        v = 4.0 * mu * (C * C) * maskf / (h * h)
        grad = s_bar[:, None] * (psi - psi_f) + jnp.einsum("ab,abk->ak", w, diff)
        blocks = w[:, :, None, None] * eye + v[:, :, None, None] * (diff[..., :, None] * diff[..., None, :])
        diag = s_bar[:, None, None] * eye + blocks.sum(axis=1)        # (K, d, d)
        H = -blocks + jnp.eye(K, dtype=psi.dtype)[:, :, None, None] * diag[:, None]
        H = H.transpose(0, 2, 1, 3).reshape(K * d, K * d)
        newton_dir = -linalg.solve_spd(H, grad.reshape(-1)).reshape(K, d)
        # Near the boundary H is SPD but its condition number can pass 1/eps
        # (weights ~ μ/h² with h → 0): then the factorisation may break down
        # (non-finite) or give a non-descent direction, depending on rounding.
        # Fall back to the diagonally scaled gradient step, always a descent
        # direction, so the iterate stays finite and strictly feasible.
        diag_h = jnp.maximum(jnp.diagonal(H).reshape(K, d), jnp.finfo(psi.dtype).tiny)
        newton_ok = jnp.all(jnp.isfinite(newton_dir)) & (jnp.sum(grad * newton_dir) < 0)
        delta = jnp.where(newton_ok, newton_dir, -grad / diag_h)
        slope = jnp.sum(grad * delta)                                  # −λ² μ < 0
        a0 = jnp.minimum(1.0, 0.99 * _max_feasible_step(psi, delta, C, mask))
        f0 = phi(psi)
        vals = jax.vmap(lambda a: phi(psi + a0 * a * delta))(alphas)
        ok = vals <= f0 + 1e-4 * a0 * alphas * slope
        alpha = jnp.where(jnp.any(ok) & (slope < 0), a0 * alphas[jnp.argmax(ok)], 0.0)
        # Stop once the step is at the rounding level (or the line search failed:
        # rounding at the optimum), or the decrement λ² = −slope/μ is negligible.
        moved = jnp.where(-slope / mu > 1e-14, alpha * jnp.max(jnp.abs(delta)), 0.0)
        accept = (alpha > 0) & jnp.all(jnp.isfinite(delta))
        return jnp.where(accept, psi + alpha * delta, psi), it + 1, jnp.where(accept, moved, 0.0)

    psi, _, _ = jax.lax.while_loop(cond, newton, (psi, jnp.int32(0), jnp.asarray(jnp.inf, psi.dtype)))
    return psi


def _barrier_path(psi, psi_f, s_bar, C, mask, mu_hi, mu_lo, max_newton, factor=10.0):
    """The barrier method: :func:`_barrier_newton` at μ = μ_hi, μ_hi/10, … down to
    μ_lo, from a strictly feasible ψ. Returns ψ (K, d) and the multipliers
    Ω̃_ab = μ_lo / (−h_ab) (K, K): with them stationarity is exactly the linear
    system of Proposition 6, and Ω̃_ab (−h_ab) = μ_lo (complementary slackness up
    to the barrier weight)."""
    n_stages = jnp.ceil(jnp.log(mu_hi / mu_lo) / jnp.log(factor)).astype(jnp.int32) + 1

    def stage(j, psi):
        mu = jnp.maximum(mu_hi / factor**j, mu_lo)
        return _barrier_newton(psi, psi_f, s_bar, C, mask, mu, max_newton)

    psi = jax.lax.fori_loop(0, n_stages, stage, psi)
    h = jnp.where(mask, C * squared_distances(psi, psi) - 1.0, -1.0)
    omega = jnp.where(mask, mu_lo / (-h), 0.0)
    return psi, omega


def _feasible_start(psi0, C, mask):
    """Shrink ψ0 towards its mean until max h ≤ −0.19 (strictly feasible)."""
    mean = jnp.mean(psi0, axis=0, keepdims=True)
    worst = jnp.max(jnp.where(mask, C * squared_distances(psi0, psi0), 0.0))
    scale = jnp.minimum(1.0, 0.9 / jnp.sqrt(jnp.maximum(worst, 1e-300)))
    return mean + scale * (psi0 - mean)


def _constraint_loop(x, beta, log_prior, C, mask, psi0, damping, tol, mu_hi, mu_lo, max_steps,
                     max_newton):
    """Outer fixed-point iteration with an interior-point projection per step."""
    dtype = psi0.dtype
    K = psi0.shape[0]

    def viol_of(psi):
        return jnp.max(_violation(psi, C, mask))

    def cond(state):
        psi, omega, t, res = state
        return (t < max_steps) & (res >= tol)

    def body(state):
        psi, omega, t, res = state
        psi_f = _step(psi, x, beta, log_prior)
        s_bar = _aggregate_posterior(psi, x, beta, log_prior)
        # A strictly feasible F is its own projection (exactly; Ω̃ = 0).
        f_ok = viol_of(psi_f) < 0.0

        def projected(_):
            # First step: the whole barrier path; later steps start from the previous
            # projection (nearly centred), a few decades above the floor.
            hi = jnp.where(t == 0, mu_hi, jnp.minimum(mu_hi, 1e3 * mu_lo))
            return _barrier_path(psi, psi_f, s_bar, C, mask, hi, mu_lo, max_newton)

        proj, omega = jax.lax.cond(f_ok, lambda _: (psi_f, jnp.zeros((K, K), dtype)), projected, None)
        new = (1 - damping) * proj + damping * psi   # the feasible set is convex
        res = jnp.sqrt(jnp.sum((new - psi) ** 2))
        return new, omega, t + 1, res

    start = _feasible_start(psi0, C, mask)
    init = (start, jnp.zeros((K, K), dtype), jnp.int32(0), jnp.asarray(jnp.inf, dtype))
    psi, omega, t, res = jax.lax.while_loop(cond, body, init)
    return psi, omega, t, res, viol_of(psi)


@functools.partial(jax.jit, static_argnames=("max_steps", "max_newton"))
def _solve_constraint_batched(x, betas, Ls, log_prior, C1, mask, psi0, damping, tol, mu_hi, mu_lo,
                              max_steps, max_newton):
    def one(args):
        beta, L, p0 = args
        return _constraint_loop(x, beta, log_prior, C1 / (L * L), mask, p0, damping, tol, mu_hi,
                                mu_lo, max_steps, max_newton)

    # lax.map, not vmap: each problem stops at its own tolerance and skips the
    # interior-point projection when F is feasible (a vmapped cond runs both
    # branches, and a vmapped while loop runs until the slowest problem stops).
    return jax.lax.map(one, (betas, Ls, psi0))


def solve_lipschitz_constraint(
    x,
    betas,
    grid: LatentGrid,
    L=1.0,
    *,
    support: str = "local",
    r: float = 0.2,
    weighting: str | None = None,
    psi0=None,
    damping: float = 0.0,
    tol: float | None = None,
    gap: float | None = None,
    newton_steps: int = 50,
    max_steps: int = 1000,
    feas_tol: float = 0.0,
    init_noise: float = 0.1,
    key=None,
    warn: bool = True,
) -> ConstraintResult:
    """Fixed points under the hard Lipschitz bound C_ab ‖ψ_a − ψ_b‖² ≤ 1 on the
    support, for all problems (β, L) in one jitted call (``lax.map`` over them).

    Each outer step computes F(ψ^t) and s̄(ψ^t) (eq. 14–15) and replaces F by its
    s̄-weighted projection on the Lipschitz set, i.e. the constrained minimiser
    of eq. (18) for that q (a convex QCQP). A strictly feasible F is its own
    projection (then Ω̃ = 0 and the step is exactly the unconstrained one);
    otherwise the projection is computed by the barrier (interior-point) method
    from the previous, strictly feasible, iterate: Newton's method with an exact
    fraction-to-the-boundary rule and Armijo backtracking on
    ½Σ s̄_a‖ψ_a − F_a‖² − μ Σ log(−h_ab), μ decreasing by 10 down to its floor.
    The iterates satisfy the bound *strictly* at every step, and the barrier gives
    the multipliers Ω̃_ab = μ / (−h_ab) ≥ 0, h_ab = C_ab‖ψ_a − ψ_b‖² − 1, with which
    stationarity is exactly ψ = Pᵀ(Ω̃ ⊙ C) F(ψ) of Proposition 6, and complementary
    slackness holds to Ω̃_ab (−h_ab) = μ (the barrier floor).

    Why not projected dual ascent Ω̃ ← [Ω̃ + η g]₊ between projected steps (the
    obvious scheme): tiles in holes have aggregate posterior s̄_a ~ 1e-30, the
    dual is then very ill-conditioned and the iteration oscillates for every step
    size we tried (also with a proportional term); ADMM (dual ascent on the
    augmented Lagrangian) converges, but sublinearly (~1e3 iterations per
    projection for 1e-3 feasibility at L = 0.25 on an 8 × 8 grid). The barrier
    method projects in ~10 Newton steps per decade of μ. See docs/lipschitz.md.

    The initial ψ0 is shrunk towards its mean until it is strictly feasible. A
    constant decoder is always feasible, so the constraint set is never empty: a
    problem that is not ``converged`` ran out of ``max_steps``.

    Args:
      x: (n, d), float64 recommended (interior-point methods live near the
        boundary); betas: scalar or (B,) β > 0; L: scalar or (B,) Lipschitz
        constant > 0 (broadcast against betas).
      support, r, weighting: as in :func:`solve_lipschitz`.
      psi0: (K, d) or (B, K, d); default :func:`vaefp_jax.solver.initial_psi`.
      damping: weight of the previous iterate in the outer step (keeps
        feasibility: the set is convex).
      tol: on ‖Δψ‖_F per outer step (default 1e-10 in float64, 1e-5 in float32).
      gap: the floor of μ relative to the data variance (default 1e-9 in float64,
        1e-5 in float32); the first projection starts at μ = 1e-2 × variance,
        later ones three decades above the floor.
      newton_steps: the most Newton steps per value of μ.
      feas_tol: ``feasible`` means max_violation ≤ feas_tol (the iterates are
        strictly feasible, so 0 by default).

    Cost: a dense (K d) × (K d) solve per Newton step: meant for K ≲ 400.
    """
    _validate.check_data(x)
    _validate.check_log_prior(grid.log_prior)
    betas, Ls = _broadcast_problems(betas, L, "L")
    if np.any(Ls <= 0):
        raise ValueError(f"L must be > 0, got min {Ls.min()}")
    _validate.check_positive("feas_tol", feas_tol, allow_zero=True)
    if gap is not None:
        _validate.check_positive("gap", gap)
    if not (0.0 <= float(damping) < 1.0):
        raise ValueError(f"damping must be in [0, 1), got {damping}")
    for name, v in (("max_steps", max_steps), ("newton_steps", newton_steps)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    C1, mask = _geometry(grid, support, r, 1.0, weighting)
    if not mask.any():
        raise ValueError("the support mask is empty: no pairs to constrain (increase r)")
    dtype = _working_dtype(np.asarray(x).dtype)
    is64 = dtype == jnp.float64
    x = jnp.asarray(x, dtype)
    B = betas.shape[0]
    protocol = Protocol(damping=damping, tol=tol, max_steps=int(max_steps), init_noise=init_noise)
    psi0 = _initial(x, grid, psi0, protocol, key, B, dtype)
    tol_ = float(tol) if tol is not None else (1e-10 if is64 else 1e-5)
    gap_ = float(gap) if gap is not None else (1e-9 if is64 else 1e-5)
    xv = np.asarray(x, np.float64)
    var = max(float(((xv - xv.mean(0)) ** 2).sum(1).mean()), 1e-300)
    psi, omega, steps, res, viol = _solve_constraint_batched(
        x, jnp.asarray(betas, dtype), jnp.asarray(Ls, dtype), jnp.asarray(grid.log_prior, dtype),
        jnp.asarray(C1, dtype), jnp.asarray(mask), psi0, jnp.asarray(damping, dtype),
        jnp.asarray(tol_, dtype), jnp.asarray(1e-2 * var, dtype), jnp.asarray(gap_ * var, dtype),
        max_steps=int(max_steps), max_newton=int(newton_steps))
    feasible = viol <= feas_tol
    converged = feasible & (res < tol_) & jnp.all(jnp.isfinite(psi), axis=(1, 2))
    result = ConstraintResult(beta=jnp.asarray(betas, dtype), L=jnp.asarray(Ls, dtype), psi=psi,
                              omega=omega, steps=steps, converged=converged, feasible=feasible,
                              max_violation=viol, residual=res, tol=tol_, feas_tol=float(feas_tol),
                              support=support, r=float(r))
    if warn:
        result.warn_if_not_converged(stacklevel=2)
    return result
