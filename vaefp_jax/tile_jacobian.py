r"""The Jacobian of the dense tile map F (eq. 15) in closed form, and its exact Woodbury solve.

This is :meth:`vaefp_jax.maps.DenseMap.jacobian`: an operator of :mod:`vaefp_jax.operators`
(products J v from (K, n) weights, no exponential) that also carries the factors below.

Write L_jb = ℓ_jb − log c_j (ℓ_jb = −‖x_j − ψ_b‖²/2β), w_jb = softmax_j(L_jb) (the
weights of eq. 15, each column sums to 1), q_ja = softmax_a(ℓ_ja + log π_a)
(the tile posterior) and ψ'_b = F(ψ)_b = Σ_j w_jb x_j. Then

    ∂ψ'_b/∂L_jb = w_jb (x_j − ψ'_b),
    ∂L_jb/∂ψ_a  = δ_ab (x_j − ψ_b)/β − q_ja (x_j − ψ_a)/β     (the second term from c_j),

so the Jacobian is a block diagonal plus a rank-n coupling,

    J_ba = ∂ψ'_b/∂ψ_a = δ_ab A_b − Σ_j U_bj V_aj^T,
    A_b  = Σ_j w_jb (x_j − ψ'_b)(x_j − ψ_b)^T / β          (d × d),
    U_bj = w_jb (x_j − ψ'_b),    V_aj = q_ja (x_j − ψ_a)/β   (d-vectors).

(I − J) v = r is solved by the Woodbury identity with M = blockdiag(I − A_b):

    v = M⁻¹r − M⁻¹U (I_n + Vᵀ M⁻¹ U)⁻¹ Vᵀ M⁻¹ r,

at cost O(K min(d, n)³ + K d n² + n³) instead of O((K d)³); every dense solve
goes through :mod:`vaefp_jax.linalg` (never a batched LAPACK call on CPU). M is singular only where a
tile's own weighted covariance reaches β, which for tiles sharing a fixed point
is a phase transition, where I − J is singular too.

With respect to β, ∂ψ'_b/∂β = Σ_j w_jb (x_j − ψ'_b) ∂L_jb/∂β with
∂L_jb/∂β = ‖x_j − ψ_b‖²/2β² − Σ_a q_ja ‖x_j − ψ_a‖²/2β²; we let JAX derive it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from vaefp_jax import linalg
from vaefp_jax.equations import DIRECT_MAX_D, tile_weights
from vaefp_jax.precision import einsum, matmul

__all__ = ["JacobianFactors", "jacobian_factors", "matvec", "woodbury_solve_factors"]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["w", "q", "x", "psi", "psi_new", "beta"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class JacobianFactors:
    """J = blockdiag(A) − U Vᵀ at ψ, kept as the (K, n) weights it is made of.

    Fields: ``w`` (K, n) the weights of eq. (15), w_bj (each tile's row sums to 1);
    ``q`` (K, n) the tile posterior q_jb, transposed (each column sums to 1); ``x``
    (n, d), ``psi`` (K, d) ψ and ``psi_new`` (K, d) ψ' = F(ψ); ``beta``.

    The (K, n, d) factors U_bj = w_jb (x_j − ψ'_b), V_aj = q_ja (x_j − ψ_a)/β and
    D_bj = (x_j − ψ_b)/β, and the (K, d, d) blocks A_b = Σ_j U_bj D_bjᵀ, are
    properties, formed only by the solves that need them (:func:`woodbury_solve_factors`):
    :func:`matvec`, and with it the spectral estimates of :mod:`vaefp_jax.operators`, works on
    the (K, n) weights alone, so a spectral estimate never holds three (K, n, d)
    arrays in memory (at n = 1797, K = 144, d = 64 they are 400 MB in float64, and
    reading them made a product cost ten map evaluations)."""

    w: jax.Array
    q: jax.Array
    x: jax.Array
    psi: jax.Array
    psi_new: jax.Array
    beta: jax.Array

    @property
    def factors(self) -> "JacobianFactors":
        """Itself: the structured factors of the Woodbury solve (:mod:`vaefp_jax.operators`)."""
        return self

    def mv(self, v: jax.Array) -> jax.Array:
        """J v (:func:`matvec`), v (K, d)."""
        return matvec(self, v)

    def rmv(self, v: jax.Array) -> jax.Array:
        """Jᵀ v: the transpose of :func:`matvec`, which is linear in v."""
        return jax.linear_transpose(self.mv, v)(v)[0]

    @property
    def tile_mass(self) -> jax.Array:
        """s_a = Σ_i q_ia (K,), the scaling that makes J symmetric at a fixed point
        (:func:`vaefp_jax.operators.lanczos`)."""
        return jnp.sum(self.q, axis=1)

    @property
    def U(self) -> jax.Array:
        """U_bj = w_jb (x_j − ψ'_b), (K, n, d)."""
        return self.w[:, :, None] * (self.x[None, :, :] - self.psi_new[:, None, :])

    @property
    def D(self) -> jax.Array:
        """D_bj = (x_j − ψ_b)/β, (K, n, d)."""
        return (self.x[None, :, :] - self.psi[:, None, :]) / self.beta

    @property
    def V(self) -> jax.Array:
        """V_aj = q_ja (x_j − ψ_a)/β, (K, n, d)."""
        return self.q[:, :, None] * self.D

    @property
    def A(self) -> jax.Array:
        """The diagonal blocks A_b = Σ_j U_bj D_bjᵀ, (K, d, d)."""
        return einsum("bjd,bje->bde", self.U, self.D)


def jacobian_factors(psi, x, beta, log_prior) -> JacobianFactors:
    """The factors of ∂F/∂ψ at ψ (K, d) for data x (n, d)."""
    tw = tile_weights(psi, x, beta, log_prior)  # eq. (14), one exp per pair, (K, n)
    w = tw.weights  # the weights of eq. (15): each tile's row sums to 1
    return JacobianFactors(w=w, q=tw.posterior, x=x, psi=psi, psi_new=matmul(w, x), beta=jnp.asarray(beta, psi.dtype))


def matvec(f: JacobianFactors, v: jax.Array) -> jax.Array:
    """J v for v of shape (K, d), O(K n d) with no (K, n, d) array:

        (J v)_b = Σ_j w_jb (x_j − ψ'_b) s_bj,   s_bj = (x_j − ψ_b)·v_b/β − Σ_a q_ja (x_j − ψ_a)·v_a/β.

    For d ≤ :data:`~vaefp_jax.equations.DIRECT_MAX_D` both contractions are taken over
    differences (x_j − ψ_b), fused broadcast-and-reduce loops, so that Jv has the full
    relative precision at small β (where the points that matter to a tile lie within
    √β of it) as the map does; for larger d, matrix products of the data centred on
    its mean (absolute error ~eps ‖x − μ‖, like the map's distances there).
    """
    x, psi, psi_new, beta = f.x, f.psi, f.psi_new, f.beta
    if x.shape[-1] <= DIRECT_MAX_D:
        dv = jnp.sum((x[None, :, :] - psi[:, None, :]) * v[:, None, :], axis=-1)  # (K, n)
    else:
        mu = jnp.mean(x, axis=0)
        dv = matmul(x - mu, v.T).T - jnp.sum((psi - mu) * v, axis=1)[:, None]
    s = (dv - jnp.sum(f.q * dv, axis=0)[None, :]) / beta
    ws = f.w * s
    if x.shape[-1] <= DIRECT_MAX_D:
        return jnp.sum(ws[:, :, None] * (x[None, :, :] - psi_new[:, None, :]), axis=1)
    mu = jnp.mean(x, axis=0)
    return matmul(ws, x - mu) - (psi_new - mu) * jnp.sum(ws, axis=1, keepdims=True)


def _block_solver(f: JacobianFactors):
    """Y ↦ M_b⁻¹ Y_b for every tile, M_b = I − A_b, Y (K, d, r); the matrices are
    formed once and the returned function applies them to any Y.

    For d ≤ n the (d, d) blocks are formed and solved (:func:`vaefp_jax.linalg.solve`).
    For d > n, A_b = U_bᵀ D_b has rank ≤ n and the inner Woodbury identity
    M_b⁻¹ = I + U_bᵀ (I_n − D_b U_bᵀ)⁻¹ D_b needs only (n, n) systems: with
    MNIST pixels (d = 784) on a few dozen images this is the difference between
    K LU factorisations of 784 × 784 and of n × n.
    """
    (_, n), d = f.w.shape, f.x.shape[1]
    if d <= n:
        M = jnp.eye(d, dtype=f.x.dtype)[None] - f.A  # (K, d, d)
        return lambda Y: linalg.solve(M, Y)
    G = jnp.eye(n, dtype=f.x.dtype)[None] - einsum("bjd,bkd->bjk", f.D, f.U)  # (K, n, n)
    return lambda Y: Y + einsum("bjd,bjr->bdr", f.U, linalg.solve(G, einsum("bjd,bdr->bjr", f.D, Y)))


def woodbury_solve_factors(f: JacobianFactors, rhs: jax.Array) -> jax.Array:
    """v with (I − J) v = rhs, rhs (K, d)."""
    n = f.w.shape[1]
    block_solve = _block_solver(f)
    U, V = f.U, f.V
    Minv_r = block_solve(rhs[..., None])[..., 0]  # (K, d)
    Minv_U = block_solve(jnp.swapaxes(U, 1, 2))  # (K, d, n)
    cap = jnp.eye(n, dtype=rhs.dtype) + einsum("bjd,bdk->jk", V, Minv_U)  # (n, n)
    t = einsum("bjd,bd->j", V, Minv_r)
    y = linalg.solve(cap, t)
    return Minv_r - einsum("bdk,k->bd", Minv_U, y)
