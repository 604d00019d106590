r"""The Jacobian J = ∂F/∂ψ of a step map as an operator, and the one family of solves and
spectral estimates that work on it.

Every consumer of J (the Newton steps and the stability certificate of
:class:`~vaefp_jax.Accelerated`, the implicit derivatives of :func:`~vaefp_jax.sweep`, the
branch Newton of :func:`~vaefp_jax.refine_bracket`) asks the problem's step map for it
(:meth:`vaefp_jax.maps.StepMap.jacobian`) and uses it only through this interface:

* ``mv(v)``: J v, and ``rmv(v)``: Jᵀ v, for v of shape (K, d);
* ``tile_mass``: s_a = Σ_i q_ia (K,), the scaling that makes J symmetric at a fixed point
  (:func:`lanczos`), or None where the map is not the plain tile map (a constrained map);
* ``factors``: the structured factors J = blockdiag(A) − U Vᵀ of the Woodbury solve
  (:class:`~vaefp_jax.tile_jacobian.JacobianFactors`, which is itself such an operator), or None.

Three kinds exist. The dense map returns its closed-form factors
(:func:`vaefp_jax.tile_jacobian.jacobian_factors`: (K, n) weights, O(K n d) a product, no
exponential). The blocked map returns the same closed form computed block by block
(:class:`MatrixFreeJacobian`: about one evaluation a product, no (K, n) array). Any other map,
and any map a user adds, gets :func:`linearized`: products by forward- and
reverse-mode differentiation of the map's own ``evaluate``, recomputed at every product, so
they hold no more memory than one evaluation and cost a few evaluations each.

The solves of (I − J) v = r (:data:`NEWTON_SOLVES`): "woodbury" (exact, needs ``factors``),
"krylov" (restarted GMRES on ``mv``, any operator) and "dense" (J formed from K d products,
LU). :func:`newton_solve_name` makes the automatic choice on the cost model of
:func:`solve_costs` and on what the operator offers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vaefp_jax import linalg, tile_jacobian
from vaefp_jax.precision import tensordot, vdot

__all__ = ["MatrixFreeJacobian", "linearized", "dense_matrix", "krylov_solve", "woodbury_solve", "dense_solve",
           "NEWTON_SOLVES", "KRYLOV_RTOL", "product_cost", "solve_costs", "prefers_krylov", "check_newton_solve",
           "newton_solve_name", "newton_solve", "power_iteration", "lanczos", "SPECTRAL", "spectral_estimate"]


@dataclasses.dataclass(frozen=True)
class MatrixFreeJacobian:
    """J given by its product ``matvec(v)`` (linear in v, the Jacobian's data closed over); ``rmv``
    is its transpose (``jax.linear_transpose``). ``psi`` (K, d) the point; ``tile_mass`` s_a (K,)
    for :func:`lanczos`, or None. Built and used inside one trace (it is not a pytree)."""

    matvec: Callable[[jax.Array], jax.Array]
    psi: jax.Array
    tile_mass: jax.Array | None = None

    factors = None

    def mv(self, v: jax.Array) -> jax.Array:
        return self.matvec(v)

    def rmv(self, v: jax.Array) -> jax.Array:
        return jax.linear_transpose(self.matvec, v)(v)[0]


def linearized(fn: Callable[[jax.Array], jax.Array], psi: jax.Array,
               tile_mass: jax.Array | None = None) -> MatrixFreeJacobian:
    """J = ∂fn/∂ψ at ``psi`` by automatic differentiation: each product is a JVP of ``fn`` (any
    differentiable ψ (K, d) ↦ (K, d), a step map's ``evaluate`` or a constrained map), recomputed
    every time, so nothing of size (K, n) outlives one product; Jᵀ v is its transpose (reverse mode)."""
    return MatrixFreeJacobian(lambda v: jax.jvp(fn, (psi,), (v,))[1], psi, tile_mass)


def dense_matrix(op, shape: tuple[int, ...]) -> jax.Array:
    """J as a (K d, K d) matrix, from K d products ``op.mv`` (one per basis vector)."""
    size = math.prod(shape)
    eye = jnp.eye(size, dtype=op.psi.dtype)
    return jax.vmap(lambda e: op.mv(e.reshape(shape)).reshape(-1), out_axes=1)(eye)


KRYLOV_RTOL = 1e-6
"""Relative residual of a Newton step's Krylov solve: each inexact Newton step then
contracts the residual by about this factor (a linear rate of 1e-6 a step), and a
step near a transition (ρ ≈ 0.995 at digits' β_c) takes ~50 products, not ~120."""
KRYLOV_RESTART, KRYLOV_CYCLES = 100, 3


def krylov_solve(op, rhs: jax.Array, *, rtol: float = KRYLOV_RTOL, restart: int = KRYLOV_RESTART,
                 cycles: int = KRYLOV_CYCLES) -> jax.Array:
    """v with ‖(I − J) v − rhs‖ ≤ ``rtol`` ‖rhs‖, rhs (K, d): restarted GMRES on ``op.mv``.

    Matrix-free: one product per Krylov vector and no (n, n) array, so it is the cheaper
    solve for large n (:func:`prefers_krylov`) and the only one for a map without factors.
    Iterations are bounded (``restart`` × ``cycles`` products), so a solve never hangs; one
    that stops short returns GMRES's best iterate, which the caller checks (the Newton steps
    of :class:`~vaefp_jax.Accelerated` accept a candidate only if it lowers the free energy,
    and the branch Newton of :func:`~vaefp_jax.refine_bracket` reports its residual). Near a
    transition I − J has one eigenvalue 1 − ρ → 0, isolated: the Krylov space finds it in a
    few products."""
    return linalg.gmres(lambda u: u - op.mv(u), rhs, tol=rtol, restart=restart, cycles=cycles)


def woodbury_solve(op, rhs: jax.Array) -> jax.Array:
    """v with (I − J) v = rhs exactly, by the Woodbury identity on ``op.factors``
    (:func:`vaefp_jax.tile_jacobian.woodbury_solve_factors`); the operator must have them."""
    if op.factors is None:
        raise ValueError("the Woodbury solve needs the structured Jacobian of the dense map; this step map's "
                         "Jacobian has no factors (use newton_solve='krylov' or 'auto')")
    return tile_jacobian.woodbury_solve_factors(op.factors, rhs)


def dense_solve(op, rhs: jax.Array) -> jax.Array:
    """v with (I − J) v = rhs by LU on J formed from K d products (:func:`dense_matrix`)."""
    J = dense_matrix(op, rhs.shape)
    return linalg.solve(jnp.eye(J.shape[0], dtype=J.dtype) - J, rhs.reshape(-1)).reshape(rhs.shape)


NEWTON_SOLVES = {"woodbury": woodbury_solve, "krylov": krylov_solve, "dense": dense_solve}
"""The solves (I − J) v = r on a Jacobian operator, by name: ``(op, rhs) -> v``."""

KRYLOV_PRODUCTS = 150   # products J·v assumed per Krylov solve in :func:`prefers_krylov`


def product_cost(num_points: int, num_tiles: int, dim: int) -> float:
    """Operations of one product J·v with the factors (or one map JVP): ~6 n K d."""
    return 6.0 * num_points * num_tiles * dim


def solve_costs(num_points: int, num_tiles: int, dim: int) -> dict[str, float]:
    """Operations of one solve (I − J) v = r by each of :data:`NEWTON_SOLVES`.

    Woodbury: the (n, n) capacity matrix (2 n² K d), the K blocks A_b (2 K d² n), their
    LU and the capacity LU (K d³/3 + n³/3); Krylov: :data:`KRYLOV_PRODUCTS` products
    (:func:`product_cost`); dense: K d products and an LU of (K d)² (2 (K d)³/3)."""
    n, K, d = float(num_points), float(num_tiles), float(dim)
    return {"woodbury": 2 * n * n * K * d + 2 * K * d * d * n + K * d ** 3 / 3 + n ** 3 / 3,
            "krylov": KRYLOV_PRODUCTS * product_cost(num_points, num_tiles, dim),
            "dense": 2 * (K * d) ** 3 / 3 + K * d * product_cost(num_points, num_tiles, dim)}


def prefers_krylov(num_points: int, num_tiles: int, dim: int) -> bool:
    """Whether a Krylov solve is cheaper than the exact Woodbury solve (:func:`solve_costs`).
    Krylov wins for n above ~450: not at the paper's size (n = 120), iris or wine; at
    scikit-learn's digits (n = 1797, K = 144, d = 64) it is ~4× cheaper on that count."""
    cost = solve_costs(num_points, num_tiles, dim)
    return cost["woodbury"] > cost["krylov"]


def check_newton_solve(method: str, factored: bool = True) -> str:
    """``method`` if it is ``"auto"`` or names a solve of :data:`NEWTON_SOLVES` that a map whose
    Jacobian has (``factored``) or lacks the Woodbury factors can do, else a one-line
    ``ValueError`` (the check that needs no problem size)."""
    if method != "auto" and method not in NEWTON_SOLVES:
        raise ValueError(f"newton_solve must be 'auto', 'woodbury', 'krylov' or 'dense', got {method!r}")
    if method == "woodbury" and not factored:
        raise ValueError("newton_solve='woodbury' needs a step map whose Jacobian has the Woodbury factors "
                         "(DenseMap); use 'krylov' or 'auto'")
    return method


def newton_solve_name(method: str, num_points: int, num_tiles: int, dim: int, factored: bool = True) -> str:
    """``method`` if it names a solve of :data:`NEWTON_SOLVES`; for ``"auto"`` the cheaper of
    Woodbury and Krylov at this size (:func:`prefers_krylov`) where the map's Jacobian has
    factors (``factored``), else Krylov; ``ValueError`` for any other name, and for
    "woodbury" on a map without factors."""
    if method == "auto":
        return "krylov" if not factored or prefers_krylov(num_points, num_tiles, dim) else "woodbury"
    return check_newton_solve(method, factored)


def newton_solve(method: str, num_points: int, num_tiles: int, dim: int, factored: bool = True):
    """The solve ``(op, rhs) -> v`` that :func:`newton_solve_name` names."""
    return NEWTON_SOLVES[newton_solve_name(method, num_points, num_tiles, dim, factored)]


def power_iteration(op, psi: jax.Array, num_iter: int, key=None) -> tuple[jax.Array, jax.Array]:
    """(ρ, v): the geometric-mean growth rate of ‖J^k v‖ over the last half of
    ``num_iter`` power iterations (one ``op.mv`` a step), and the last normalised iterate
    (the leading eigenvector when it is real and isolated). Exact in the limit whatever the
    phases of the top eigenvalues; error ~ log(gap)/num_iter for close ones."""
    key = jax.random.PRNGKey(0) if key is None else key
    v = jax.random.normal(key, psi.shape, psi.dtype)
    v = v / jnp.linalg.norm(v)
    half = num_iter // 2
    tiny = jnp.finfo(psi.dtype).tiny

    def body(i, carry):
        v, acc = carry
        w = op.mv(v)
        nw = jnp.linalg.norm(w)
        acc = acc + jnp.where(i >= half, jnp.log(jnp.maximum(nw, tiny)), 0.0)
        return w / jnp.maximum(nw, tiny), acc

    v, acc = jax.lax.fori_loop(0, num_iter, body, (v, jnp.zeros((), psi.dtype)))
    return jnp.exp(acc / (num_iter - half)), v


def lanczos(op, psi: jax.Array, num_iter: int, key=None) -> tuple[jax.Array, jax.Array]:
    r"""(ρ, v) like :func:`power_iteration`, from ``num_iter`` Lanczos steps:
    valid at a fixed point of the tile map, where J is similar to a symmetric matrix.

    Why J is symmetrisable there: the map is a preconditioned gradient step on
    the free energy f(ψ) = −(β/n) Σ_i log c_i, F(ψ)_a − ψ_a = −(n/s_a) ∂f/∂ψ_a
    with s_a = Σ_i q_ia (``op.tile_mass``), for every ψ. Differentiating, at a fixed
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
    if op.tile_mass is None:
        raise ValueError("Lanczos needs the tile masses of the plain tile map; use spectral='power'")
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = psi.dtype
    m = int(num_iter)
    s = jnp.maximum(op.tile_mass, jnp.sqrt(jnp.finfo(dtype).tiny))
    root = jnp.sqrt(s / jnp.sum(s))[:, None]          # D^{-1/2} up to a constant factor, (K, 1)
    sym = lambda u: op.mv(u / root) * root             # S u = D^{-1/2} J D^{1/2} u
    q0 = jax.random.normal(key, psi.shape, dtype)
    Q = jnp.zeros((m + 1,) + psi.shape, dtype).at[0].set(q0 / jnp.linalg.norm(q0))
    eps = jnp.finfo(dtype).eps

    def body(j, carry):
        Q, alpha, beta = carry
        w = sym(Q[j])
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
"""The spectral estimates by name, each ``(op, psi, num_iter, key=None) -> (ρ, v)``."""


def spectral_estimate(method: str):
    """The estimate of :data:`SPECTRAL` called ``method``; ``ValueError`` for any other name."""
    if method not in SPECTRAL:
        raise ValueError(f"spectral must be 'lanczos' or 'power', got {method!r}")
    return SPECTRAL[method]
