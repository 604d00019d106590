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
from vaefp_jax.precision import einsum, matmul, tensordot, vdot

__all__ = ["JacobianFactors", "jacobian_factors", "matvec", "power_iteration", "lanczos",
           "spectral_radius", "SPECTRAL", "spectral_estimate", "woodbury_solve_factors", "krylov_solve_factors",
           "NEWTON_SOLVES", "product_cost", "solve_costs", "prefers_krylov", "newton_solve", "newton_solve_name",
           "check_newton_solve"]


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
    :func:`matvec`, and with it :func:`power_iteration` and :func:`lanczos`, works on
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
    def tile_mass(self) -> jax.Array:
        """s_a = Σ_i q_ia (K,), the scaling that makes J symmetric at a fixed point (see :func:`lanczos`)."""
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


KRYLOV_RTOL = 1e-6
"""Relative residual of a Newton step's Krylov solve: each inexact Newton step then
contracts the residual by about this factor (a linear rate of 1e-6 a step), and a
step near a transition (ρ ≈ 0.995 at digits' β_c) takes ~50 products, not ~120."""
KRYLOV_RESTART, KRYLOV_CYCLES = 100, 3


def krylov_solve_factors(f: JacobianFactors, rhs: jax.Array, *, rtol: float = KRYLOV_RTOL,
                         restart: int = KRYLOV_RESTART, cycles: int = KRYLOV_CYCLES) -> jax.Array:
    """v with ‖(I − J) v − rhs‖ ≤ ``rtol`` ‖rhs‖, rhs (K, d): restarted GMRES on :func:`matvec`.

    Matrix-free: O(K n d) a product and no (K, n, d) or (n, n) array, against the
    2 n² K d operations of the Woodbury capacity matrix, so it is the cheaper solve
    for large n (:func:`prefers_krylov`). Iterations are bounded (``restart`` ×
    ``cycles`` products), so a solve never hangs; one that stops short returns
    GMRES's best iterate, which the caller checks (the Newton steps of
    :class:`~vaefp_jax.Accelerated` accept a candidate only if it lowers the free
    energy, and the branch Newton of :func:`~vaefp_jax.refine_bracket` reports its
    residual). Near a transition I − J has one eigenvalue 1 − ρ → 0, isolated: the
    Krylov space finds it in a few products, which is why GMRES needs tens, not
    thousands, of products there."""
    return linalg.gmres(lambda u: u - matvec(f, u), rhs, tol=rtol, restart=restart, cycles=cycles)


NEWTON_SOLVES = {"woodbury": woodbury_solve_factors, "krylov": krylov_solve_factors}
"""The solves of a Newton step (I − J) v = r from :class:`JacobianFactors`, by name."""

KRYLOV_PRODUCTS = 150   # products J·v assumed per Krylov solve in :func:`prefers_krylov`


def product_cost(num_points: int, num_tiles: int, dim: int) -> float:
    """Operations of one product J·v (or one map JVP): ~6 n K d (distances, weights, sums)."""
    return 6.0 * num_points * num_tiles * dim


def solve_costs(num_points: int, num_tiles: int, dim: int) -> dict[str, float]:
    """Operations of one solve (I − J) v = r by each of :data:`NEWTON_SOLVES`.

    Woodbury: the (n, n) capacity matrix (2 n² K d), the K blocks A_b (2 K d² n), their
    LU and the capacity LU (K d³/3 + n³/3); Krylov: :data:`KRYLOV_PRODUCTS` products
    (:func:`product_cost`)."""
    n, K, d = float(num_points), float(num_tiles), float(dim)
    return {"woodbury": 2 * n * n * K * d + 2 * K * d * d * n + K * d ** 3 / 3 + n ** 3 / 3,
            "krylov": KRYLOV_PRODUCTS * product_cost(num_points, num_tiles, dim)}


def prefers_krylov(num_points: int, num_tiles: int, dim: int) -> bool:
    """Whether a Krylov solve is cheaper than the exact Woodbury solve (:func:`solve_costs`).
    Krylov wins for n above ~450: not at the paper's size (n = 120), iris or wine; at
    scikit-learn's digits (n = 1797, K = 144, d = 64) it is ~4× cheaper on that count."""
    cost = solve_costs(num_points, num_tiles, dim)
    return cost["woodbury"] > cost["krylov"]


def check_newton_solve(method: str) -> str:
    """``method`` if it is ``"auto"`` or names a solve of :data:`NEWTON_SOLVES`, else a
    one-line ``ValueError`` (the check that needs no problem size)."""
    if method != "auto" and method not in NEWTON_SOLVES:
        raise ValueError(f"newton_solve must be 'auto', 'woodbury' or 'krylov', got {method!r}")
    return method


def newton_solve_name(method: str, num_points: int, num_tiles: int, dim: int) -> str:
    """``method`` if it names a solve of :data:`NEWTON_SOLVES`; for ``"auto"`` the cheaper
    one at this size (:func:`prefers_krylov`); ``ValueError`` for any other name."""
    if check_newton_solve(method) == "auto":
        return "krylov" if prefers_krylov(num_points, num_tiles, dim) else "woodbury"
    return method


def newton_solve(method: str, num_points: int, num_tiles: int, dim: int):
    """The solve ``(factors, rhs) -> v`` that :func:`newton_solve_name` names."""
    return NEWTON_SOLVES[newton_solve_name(method, num_points, num_tiles, dim)]


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


def lanczos(f: JacobianFactors, psi: jax.Array, num_iter: int, key=None) -> tuple[jax.Array, jax.Array]:
    r"""(ρ, v) like :func:`power_iteration`, from ``num_iter`` Lanczos steps:
    valid at a fixed point, where J is similar to a symmetric matrix.

    Why J is symmetrisable there: the map is a preconditioned gradient step on
    the free energy f(ψ) = −(β/n) Σ_i log c_i, F(ψ)_a − ψ_a = −(n/s_a) ∂f/∂ψ_a
    with s_a = Σ_i q_ia (``tile_mass``), for every ψ. Differentiating, at a fixed
    point (∇f = 0) J = I − D H with D = diag(n/s) ⊗ I_d and H = ∇²f symmetric, so

        S = D^{−1/2} J D^{1/2} = I − D^{1/2} H D^{1/2}

    is symmetric and has J's (real) eigenvalues; J's eigenvectors are D^{1/2}
    times S's. Lanczos with full reorthogonalisation on S gives the extreme
    eigenvalues in O(1/√gap) products J·v where power iteration needs
    O(1/gap) (near a transition the gap 1 − ρ → 0).

    Returns ρ = max(|θ_max| + r_max, |θ_min| + r_min), the extreme Ritz values
    θ widened by their residual bounds r = β_m |y_m| (for a symmetric S an
    eigenvalue lies within r of each Ritz value, so this does not undershoot the
    extreme eigenvalues the Krylov space has found), and v the Ritz vector of
    the Ritz value of largest modulus, mapped back to J's coordinates and
    normalised. Away from a fixed point S is only nearly symmetric (by
    O(‖F(ψ) − ψ‖)); use :func:`power_iteration` there.

    Tiles with no posterior mass (s_a underflows at small β) have their s_a
    raised to √tiny: their rows and columns of S are then O(√tiny) or exact.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = psi.dtype
    m = int(num_iter)
    s = jnp.maximum(f.tile_mass, jnp.sqrt(jnp.finfo(dtype).tiny))
    root = jnp.sqrt(s / jnp.sum(s))[:, None]          # D^{-1/2} up to a constant factor, (K, 1)
    op = lambda u: matvec(f, u / root) * root          # S u = D^{-1/2} J D^{1/2} u
    q0 = jax.random.normal(key, psi.shape, dtype)
    Q = jnp.zeros((m + 1,) + psi.shape, dtype).at[0].set(q0 / jnp.linalg.norm(q0))
    eps = jnp.finfo(dtype).eps

    def body(j, carry):
        Q, alpha, beta = carry
        w = op(Q[j])
        a = vdot(Q[j], w)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - tensordot(tensordot(Q, w, axes=w.ndim), Q, axes=1)
        b = jnp.linalg.norm(w)
        # breakdown (an invariant subspace found): stop growing the basis
        ok = b > eps * (jnp.abs(a) + 1)
        Q = Q.at[j + 1].set(jnp.where(ok, w / jnp.where(ok, b, 1), 0))
        return Q, alpha.at[j].set(a), beta.at[j].set(jnp.where(ok, b, 0))

    Q, alpha, beta = jax.lax.fori_loop(0, m, body, (Q, jnp.zeros(m, dtype), jnp.zeros(m, dtype)))
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, Y = linalg.eigh(T)                      # ascending; an m × m problem
    r = jnp.abs(beta[-1] * Y[-1, :])                   # residual bounds of the Ritz pairs
    rho = jnp.maximum(jnp.abs(theta[-1]) + r[-1], jnp.abs(theta[0]) + r[0])
    top = jnp.where(jnp.abs(theta[-1]) >= jnp.abs(theta[0]), m - 1, 0)
    u = tensordot(Y[:, top], Q[:m], axes=1)
    v = u / root
    return rho, v / jnp.linalg.norm(v)


SPECTRAL = {"lanczos": lanczos, "power": power_iteration}
"""The spectral estimates by name, each ``(factors, psi, num_iter, key=None) -> (ρ, v)``."""


def spectral_estimate(method: str):
    """The estimate of :data:`SPECTRAL` called ``method``; ``ValueError`` for any other name."""
    if method not in SPECTRAL:
        raise ValueError(f"spectral must be 'lanczos' or 'power', got {method!r}")
    return SPECTRAL[method]
