r"""The Jacobian of the tile map F (eq. 15) in closed form, and fast solves with it.

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

at cost O(K d³ + K d n² + n³) instead of O((K d)³). M is singular only where a
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
from jax.scipy.special import logsumexp

from vaefp_jax.fixed_point import squared_distances

__all__ = ["JacobianFactors", "jacobian_factors", "matvec", "woodbury_solve", "power_iteration", "spectral_radius"]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["A", "U", "V"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class JacobianFactors:
    """J = blockdiag(A) − U Vᵀ. A: (K, d, d); U, V: (K, n, d)."""

    A: jax.Array
    U: jax.Array
    V: jax.Array


def jacobian_factors(psi, x, beta, log_prior) -> JacobianFactors:
    """The factors of ∂F/∂ψ at ψ (K, d) for data x (n, d)."""
    logits = -squared_distances(x, psi) / (2 * beta)  # (n, K)
    log_c = logsumexp(logits + log_prior[None, :], axis=1, keepdims=True)
    w = jax.nn.softmax(logits - log_c, axis=0)  # (n, K), columns sum to 1
    q = jax.nn.softmax(logits + log_prior[None, :], axis=1)  # (n, K), rows sum to 1
    psi_new = w.T @ x  # (K, d)
    d_new = x[None, :, :] - psi_new[:, None, :]  # x_j − ψ'_b, (K, n, d)
    d_old = x[None, :, :] - psi[:, None, :]  # x_j − ψ_b
    U = w.T[:, :, None] * d_new
    A = jnp.einsum("bjd,bje->bde", U, d_old) / beta
    V = q.T[:, :, None] * d_old / beta
    return JacobianFactors(A=A, U=U, V=V)


def matvec(f: JacobianFactors, v: jax.Array) -> jax.Array:
    """J v for v of shape (K, d)."""
    coupling = jnp.einsum("ajd,ad->j", f.V, v)  # (n,)
    return jnp.einsum("bde,be->bd", f.A, v) - jnp.einsum("bjd,j->bd", f.U, coupling)


SMALL_SOLVE_MAX_D = 8


def batched_small_solve(M: jax.Array, B: jax.Array) -> jax.Array:
    """X with M[k] X[k] = B[k] for M (K, d, d), B (K, d, m), d small.

    Gaussian elimination with partial pivoting, unrolled over the d columns and
    vectorised over k: plain element-wise XLA, no LAPACK call. Why not
    ``jnp.linalg.solve``: for K ≈ 10³ systems of size 2 the batched LAPACK
    kernels of jaxlib 0.10 dispatch the batch over XLA:CPU's thread pool
    (``ParallelBatchMap``), which was seen to hang forever (all threads idle,
    two waiting in ``BlockingCounter::Wait`` inside ``lapack_dtrsm_ffi``) on
    the Figure 3 problem — and it is slower than this loop for tiny systems.
    For d > ``SMALL_SOLVE_MAX_D`` it falls back to ``jnp.linalg.solve``.
    """
    d = M.shape[-1]
    if d > SMALL_SOLVE_MAX_D:
        return jnp.linalg.solve(M, B)
    # Eliminate on M alone and replay the row exchanges and updates on B, so
    # that the result is visibly linear in B (JAX can transpose it: reverse mode).
    rows = jnp.arange(d)

    def swap(A, k, p, is_p):
        row_k, row_p = A[:, k], jnp.take_along_axis(A, p[:, None, None], axis=1)[:, 0]
        return jnp.where(is_p[:, :, None], row_k[:, None, :], A).at[:, k].set(row_p)

    for k in range(d):
        score = jnp.where(rows[None, :] >= k, jnp.abs(M[:, :, k]), -1.0)  # pivot among rows k..d−1
        p = jnp.argmax(score, axis=1)
        is_p = rows[None, :] == p[:, None]  # (K, d)
        M, B = swap(M, k, p, is_p), swap(B, k, p, is_p)
        factor = jnp.where(rows[None, :] > k, M[:, :, k] / M[:, k, k, None], 0.0)  # (K, d)
        M = M - factor[:, :, None] * M[:, k, None, :]
        B = B - factor[:, :, None] * B[:, k, None, :]
    X = [None] * d  # back substitution on the upper-triangular M
    for k in reversed(range(d)):
        acc = B[:, k]
        for j in range(k + 1, d):
            acc = acc - M[:, k, j, None] * X[j]
        X[k] = acc / M[:, k, k, None]
    return jnp.stack(X, axis=1)


def woodbury_solve_factors(f: JacobianFactors, rhs: jax.Array) -> jax.Array:
    """v with (I − J) v = rhs, rhs (K, d)."""
    K, d = rhs.shape
    n = f.U.shape[1]
    M = jnp.eye(d, dtype=rhs.dtype)[None] - f.A  # (K, d, d)
    Minv_r = batched_small_solve(M, rhs[..., None])[..., 0]  # (K, d)
    Minv_U = batched_small_solve(M, jnp.swapaxes(f.U, 1, 2))  # (K, d, n)
    cap = jnp.eye(n, dtype=rhs.dtype) + jnp.einsum("bjd,bdk->jk", f.V, Minv_U)  # (n, n)
    t = jnp.einsum("bjd,bd->j", f.V, Minv_r)
    y = jnp.linalg.solve(cap, t)
    return Minv_r - jnp.einsum("bdk,k->bd", Minv_U, y)


def woodbury_solve(matvec_, rhs, F, psi, theta):
    """A ``linear_solve`` strategy for :func:`vaefp_jax.implicit.implicit_fixed_point`
    when F is the tile map and θ = {"x", "beta", "log_prior"}."""
    f = jacobian_factors(psi, theta["x"], theta["beta"], theta["log_prior"])
    return woodbury_solve_factors(f, rhs)


def power_iteration(f: JacobianFactors, psi: jax.Array, num_iter: int, key=None) -> tuple[jax.Array, jax.Array]:
    """(ρ, v): the geometric-mean growth rate of ‖J^k v‖ over the last half of
    ``num_iter`` power iterations with the factored J (O(K n d) a step), and the
    last normalised iterate (the leading eigenvector when it is real and isolated).
    Exact in the limit whatever the phases of the top eigenvalues; error
    ~ log(gap)/num_iter for close ones."""
    key = jax.random.PRNGKey(0) if key is None else key
    v = jax.random.normal(key, psi.shape, psi.dtype)
    v = v / jnp.linalg.norm(v)
    half = num_iter // 2
    tiny = jnp.finfo(psi.dtype).tiny

    def body(i, carry):
        v, acc = carry
        w = matvec(f, v)
        nw = jnp.linalg.norm(w)
        acc = acc + jnp.where(i >= half, jnp.log(jnp.maximum(nw, tiny)), 0.0)
        return w / jnp.maximum(nw, tiny), acc

    v, acc = jax.lax.fori_loop(0, num_iter, body, (v, jnp.zeros((), psi.dtype)))
    return jnp.exp(acc / (num_iter - half)), v


def spectral_radius(psi, x, beta, log_prior, *, num_iter: int = 500, key=None) -> jax.Array:
    """ρ(∂F/∂ψ) at ψ by :func:`power_iteration` with the factored Jacobian."""
    return power_iteration(jacobian_factors(psi, x, beta, log_prior), psi, num_iter, key)[0]
