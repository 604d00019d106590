r"""The projected update of Proposition 6 (corrected), Appendix B.

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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate, equations, linalg
from vaefp_jax.equations import squared_distances
from vaefp_jax.precision import matmul

__all__ = ["pair_weights", "laplacian", "project", "projection_operator", "pair_violations", "violation",
           "lipschitz_step"]


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
    delta = linalg.solve(M, matmul(-2.0 * lap, psi_f))
    return psi_f + delta


def projection_operator(s_bar, W):
    """P of Proposition 6 in the paper's layout: ψ^{t+1}_b = Σ_a F_a P_ab, (K, K).

    P = [I + 2 Lap(W) diag(1/s̄)]⁻¹ = diag(s̄) (diag(s̄) + 2 Lap(W))⁻¹; in the
    (K, d) layout ψ^{t+1} = Pᵀ F(ψ^t). Columns of P sum to one and P ≥ 0.
    """
    M = jnp.diag(s_bar) + 2.0 * laplacian(W)
    return matmul(jnp.diag(s_bar), linalg.solve(M, jnp.eye(M.shape[0], dtype=M.dtype)))


def pair_violations(psi, C, mask) -> jax.Array:
    """g_ab = C_ab ‖ψ_a − ψ_b‖² − 1 on the support, −inf elsewhere; (K, K)."""
    sq = squared_distances(psi, psi)
    return jnp.where(mask, C * sq - 1.0, -jnp.inf)


def violation(psi, C, mask) -> jax.Array:
    """max over the support of C_ab ‖ψ_a − ψ_b‖² − 1 (≤ 0: the bound holds);
    ψ (K, d) → scalar, or (B, K, d) → (B,)."""
    psi = jnp.asarray(psi)
    f = lambda p: jnp.max(pair_violations(p, jnp.asarray(C, p.dtype), jnp.asarray(mask)))
    return f(psi) if psi.ndim == 2 else jax.vmap(f)(psi)


def lipschitz_step(psi, x, beta, log_prior, omega, C) -> jax.Array:
    """One constrained update ψ^{t+1} = Pᵀ F(ψ^t) with multipliers Ω̃ (K, K) ≥ 0 and
    coefficients C (K, K) (Proposition 6, corrected); ψ (K, d), x (n, d). With
    Ω̃ = 0 this is exactly eq. (15)."""
    K = np.shape(psi)[0]
    for name, a in (("omega", omega), ("C", C)):
        if np.shape(a) != (K, K):
            raise ValueError(f"{name} must have shape ({K}, {K}), got {np.shape(a)}")
        _validate.check_finite(name, a)
        if _validate.is_concrete(a) and np.any(np.asarray(a) < 0):
            raise ValueError(f"{name} must be ≥ 0 (Lagrange multipliers of an inequality)")
    value = equations.evaluate(psi, x, beta, log_prior)
    dtype = value.psi.dtype
    return project(value.psi, value.tile_mass(jnp.asarray(log_prior, dtype)),
                   pair_weights(jnp.asarray(omega, dtype), jnp.asarray(C, dtype)))
