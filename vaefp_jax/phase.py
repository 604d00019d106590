r"""Phase detection: u(β), ∂u/∂β, ∂²u/∂β² through the converged fixed point.

The order parameter at the fixed point, u(β) = U(ψ*(β), β) with
U = :func:`vaefp_jax.order_parameter`, is differentiated *through the solution*:
ψ*(β) is wrapped by :func:`vaefp_jax.implicit.implicit_fixed_point`, whose
custom JVP applies dψ* = (I − ∂F/∂ψ)⁻¹ ∂F/∂β dβ and is itself differentiable,
so one nested forward-mode pass gives u, u' and u'' per β (and ``jax.grad``,
``jax.hessian`` or derivatives with respect to the data x work the same way).
The solver's loop is never unrolled.

Critical temperatures β_c are the local maxima of |∂²u/∂β²| (Figure 3, bottom
right). At a transition the spectral radius ρ of ∂F/∂ψ at the stable fixed
point tends to 1 (at the collapsed point it is λ_max(Cov)/β), which is what
:func:`refine_critical_beta` uses to locate β_c beyond the sweep's resolution.

Two ways to sweep β (:func:`sweep`):

* independent solves (the paper): every β starts from the same grid
  initialisation. Each β lands in whichever basin that start falls into; near
  a transition, where the contraction factor → 1, different β may pick
  different branches and u(β) can show small jumps.
* continuation (``continuation="cooling"`` or ``"heating"``): β values are
  visited in order, each starting from the previous fixed point (plus a small
  perturbation to break symmetries). This follows one branch — deterministic
  annealing when cooling from large β. Near a first-order-like transition it
  stays on a branch past the point where independent solves switch
  (hysteresis); cooling and heating then disagree over a β range.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate, tile_jacobian
from vaefp_jax.clusters import count_distinct, default_merge_tol
from vaefp_jax.fixed_point import _order_parameter, _step
from vaefp_jax.grid import LatentGrid
from vaefp_jax.implicit import dense_solve, gmres_solve, implicit_fixed_point
from vaefp_jax.solver import Protocol, initial_psi, iterate, solve

__all__ = [
    "SweepResult",
    "CriticalPoint",
    "sweep",
    "order_parameter_at_fixed_point",
    "critical_betas",
    "curvature",
    "refine_critical_beta",
    "refine_bracket",
    "tile_map",
    "LINEAR_SOLVERS",
]


def tile_map(psi, theta):
    """F(ψ, θ) with θ = {"x", "beta", "log_prior"}: eq. (15) as a map of (ψ, θ)."""
    return _step(psi, theta["x"], theta["beta"], theta["log_prior"])


LINEAR_SOLVERS = {
    "woodbury": tile_jacobian.woodbury_solve,
    "dense": dense_solve,
    "gmres": gmres_solve(),
}


def _linear_solve(name_or_fn):
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solve must be one of {sorted(LINEAR_SOLVERS)} or a callable, got {name_or_fn!r}")
    return LINEAR_SOLVERS[name_or_fn]


def _polish(theta, psi_init):
    """The fixed point handed in, unchanged (it was solved beforehand)."""
    return psi_init


def order_parameter_at_fixed_point(beta, x, log_prior, psi_star, linear_solve="woodbury"):
    """u(β) = U(ψ*(β), β), differentiable in ``beta`` and ``x`` to any order.

    ``psi_star`` (K, d) must be a converged fixed point at (β, x) (for example
    ``solve(...).psi[j]``); derivatives are taken along the branch through it.
    """
    theta = {"x": x, "beta": beta, "log_prior": log_prior}
    psi = implicit_fixed_point(tile_map, _polish, theta, _linear_solve(linear_solve), psi_init=psi_star)
    return _order_parameter(psi, x, beta, log_prior)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["beta", "u", "du", "d2u", "psi", "steps", "converged", "residual", "spectral_radius",
                 "distinct", "trajectory"],
    meta_fields=["merge_tol"],
)
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A β sweep with derivatives. Arrays have a leading β axis of length B.

    beta, u, du, d2u, steps, converged, residual, spectral_radius, distinct: (B,);
    psi: (B, K, d); trajectory: (B, T, K, d) or None; merge_tol: the distance
    under which two ψ_a count as the same fixed point in ``distinct``.
    """

    beta: np.ndarray
    u: np.ndarray
    du: np.ndarray
    d2u: np.ndarray
    psi: np.ndarray
    steps: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    spectral_radius: np.ndarray
    distinct: np.ndarray
    trajectory: np.ndarray | None
    merge_tol: float


@functools.partial(jax.jit, static_argnames=("linear_solve", "spectral_iters"))
def _derivatives(x, betas, log_prior, psi, linear_solve, spectral_iters):
    def one(beta, psi_star):
        u_fn = lambda b: order_parameter_at_fixed_point(b, x, log_prior, psi_star, linear_solve)
        du_fn = lambda b: jax.jvp(u_fn, (b,), (jnp.ones_like(b),))
        (u, du), (_, d2u) = jax.jvp(du_fn, (beta,), (jnp.ones_like(beta),))
        rho = tile_jacobian.spectral_radius(psi_star, x, beta, log_prior, num_iter=spectral_iters) \
            if spectral_iters else jnp.nan
        return u, du, d2u, rho

    # One β at a time: the (n, n) capacity solves are serial on CPU anyway
    # (vaefp_jax.linalg), and a β batch would multiply the (K, n, d) factors.
    return jax.lax.map(lambda a: one(*a), (betas, psi))


@functools.partial(jax.jit, static_argnames=("max_steps",))
def _continuation(x, betas, log_prior, psi0, damping, tol, max_steps, kick, key):
    def body(carry, inp):
        psi, key = carry
        beta = inp
        key, sub = jax.random.split(key)
        start = psi + kick * jax.random.uniform(sub, psi.shape, psi.dtype, -1.0, 1.0)
        out, steps, res, _ = iterate(lambda p: _step(p, x, beta, log_prior), start, damping, tol, max_steps, 0)
        return (out, key), (out, steps, res)

    _, (psi, steps, res) = jax.lax.scan(body, (psi0, key), betas)
    return psi, steps, res


def sweep(
    x,
    betas,
    grid: LatentGrid,
    *,
    protocol: Protocol | None = None,
    psi0=None,
    key=None,
    linear_solve="woodbury",
    continuation: str | None = None,
    kick: float = 1e-4,
    spectral_iters: int = 300,
    record_every: int = 0,
    warn: bool = True,
) -> SweepResult:
    """Fixed points, u, u', u'' and ρ(∂F/∂ψ) for every β of ``betas`` (B,).

    Args:
      x: (n, d) data (float64 recommended for u'': enable JAX x64).
      betas: (B,) β > 0, increasing for the figures (any order works).
      grid: tile basis.
      protocol: default :meth:`Protocol.tight` (derivatives need accurate fixed points).
      psi0, key, record_every: as in :func:`vaefp_jax.solve`.
      linear_solve: "woodbury" (default: the tile map's exact structured solve,
        O(K d n² + n³)), "dense" (LU of the (K d)² Jacobian), "gmres"
        (matrix-free) or a callable strategy.
      continuation: None (independent solves from ψ0, the paper), "cooling"
        (β visited from largest to smallest, each from the previous fixed point)
        or "heating" (smallest to largest).
      kick: half-width of the uniform perturbation added at each continuation step,
        relative to the data's RMS spread.
      spectral_iters: power iterations for ρ (0 to skip).
    """
    protocol = protocol or Protocol.tight()
    _validate.check_data(x)
    _validate.check_beta(betas, name="betas", batched=True)
    if continuation not in (None, "cooling", "heating"):
        raise ValueError(f"continuation must be None, 'cooling' or 'heating', got {continuation!r}")
    _validate.check_positive("kick", kick, allow_zero=True)
    linear_solve = _linear_solve(linear_solve)
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    betas_np = np.asarray(betas, np.float64)
    lp = jnp.asarray(grid.log_prior, dtype)
    traj = None
    if continuation is None:
        r = solve(x, betas_np, grid, psi0=psi0, protocol=protocol, key=key, record_every=record_every, warn=False)
        psi, steps, res, conv, traj = r.psi, r.steps, r.residual, r.converged, r.trajectory
    else:
        order = np.argsort(betas_np)
        if continuation == "cooling":
            order = order[::-1]
        start = initial_psi(x, grid, protocol.init_noise, key) if psi0 is None else jnp.asarray(psi0, dtype)
        if start.ndim != 2:
            raise ValueError("continuation needs one psi0 of shape (K, d)")
        spread = float(np.sqrt(np.trace(np.atleast_2d(np.cov(np.asarray(x, np.float64).T, bias=True)))))
        tol = protocol.resolved_tol(dtype)
        psi_o, steps_o, res_o = _continuation(
            x, jnp.asarray(betas_np[order], dtype), lp, start, jnp.asarray(protocol.damping, dtype),
            jnp.asarray(tol, dtype), int(protocol.max_steps), jnp.asarray(kick * spread, dtype),
            jax.random.PRNGKey(1) if key is None else key)
        inv = np.argsort(order)
        psi, steps, res = psi_o[inv], steps_o[inv], res_o[inv]
        conv = (res < tol) & jnp.all(jnp.isfinite(psi), axis=(1, 2))
    u, du, d2u, rho = _derivatives(x, jnp.asarray(betas_np, dtype), lp, psi, linear_solve, int(spectral_iters))
    merge_tol = default_merge_tol(np.asarray(x))
    result = SweepResult(
        beta=betas_np, u=np.asarray(u), du=np.asarray(du), d2u=np.asarray(d2u), psi=np.asarray(psi),
        steps=np.asarray(steps), converged=np.asarray(conv), residual=np.asarray(res),
        spectral_radius=np.asarray(rho), distinct=count_distinct(np.asarray(psi), merge_tol),
        trajectory=None if traj is None else np.asarray(traj), merge_tol=merge_tol)
    if warn and not result.converged.all():
        import warnings

        bad = result.beta[~result.converged]
        warnings.warn(f"{bad.size} of {result.beta.size} β did not converge (β = "
                      + ", ".join(f"{b:.4g}" for b in bad[:8]) + (", …" if bad.size > 8 else "")
                      + "); their derivatives are not those of a fixed point", RuntimeWarning, stacklevel=2)
    return result


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
    """A detected transition.

    ``beta``: the sweep point of the peak; ``height``: the curvature there (see
    :func:`critical_betas`); ``index``: its index in the sweep; ``jump``: True
    when the finite-difference curvature, i.e. a jump of u between sweep points,
    dominates the pointwise |u''|; ``fixed_points_below``/``_above``: distinct
    fixed points at the neighbouring sweep points."""

    beta: float
    height: float
    index: int
    jump: bool
    fixed_points_below: int
    fixed_points_above: int


def _grid_variable(beta, variable):
    """The sweep coordinate in which curvatures are taken: β or ln β."""
    return beta if variable == "beta" else np.log(beta)


def curvature(result: SweepResult, variable: str = "beta") -> tuple[np.ndarray, np.ndarray]:
    """(pointwise, finite-difference) curvature of u, sorted by β.

    ``variable="beta"``: |∂²u/∂β²| (the paper's measure) and |D²u| on the β grid.
    ``variable="log_beta"``: |∂²u/∂(ln β)²| = |β² u'' + β u'| and |D²u| on the ln β
    grid — scale-free, so transitions decades apart compare fairly on a
    log-spaced sweep (|∂²u/∂β²| grows like 1/β² towards small β).

    The implicit derivative is exact at each β but blind to what happens
    *between* sweep points: where u jumps from one branch to another (a
    discontinuous transition, or a branch ending) every pointwise derivative
    stays finite. The three-point second difference of u on the (non-uniform)
    grid sees such a jump as a spike of height ~|Δu|/Δ². End points get 0.
    """
    if variable not in ("beta", "log_beta"):
        raise ValueError(f"variable must be 'beta' or 'log_beta', got {variable!r}")
    order = np.argsort(result.beta)
    b, u = result.beta[order], result.u[order]
    t = _grid_variable(b, variable)
    fd = np.zeros_like(u)
    h1, h2 = t[1:-1] - t[:-2], t[2:] - t[1:-1]
    fd[1:-1] = 2 * ((u[2:] - u[1:-1]) / h2 - (u[1:-1] - u[:-2]) / h1) / (h1 + h2)
    d2 = result.d2u[order]
    if variable == "log_beta":
        d2 = b * b * d2 + b * result.du[order]
    return np.abs(d2), np.abs(fd)


def critical_betas(result: SweepResult, top_k: int = 3, variable: str = "beta") -> list[CriticalPoint]:
    """The β at the local maxima of the curvature of u(β), tallest first (Figure 3).

    The curvature at each sweep point is max(pointwise, finite-difference) of
    :func:`curvature` in ``variable`` ("beta": |∂²u/∂β²| as in the paper;
    "log_beta" for sweeps over decades): the implicit second derivative where u
    is smooth, the finite-difference one where u jumps between sweep points. A
    local maximum is an interior point ≥ both neighbours (and > one of them);
    only converged points with converged neighbours count, and only peaks
    above the rounding level of the curvature (1e3 eps max|u| / (h1 h2) for grid
    gaps h1, h2), so that a flat u (one merged fixed point) has no peaks.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    order = np.argsort(result.beta)
    b = result.beta[order]
    pointwise, fd = curvature(result, variable)
    h = np.maximum(pointwise, fd)
    ok = result.converged[order] & np.isfinite(h)
    ok[1:-1] &= ok[:-2] & ok[2:]  # the finite difference needs both neighbours
    # A peak must stand above the rounding level of the curvature. Where u is
    # flat (a fully merged phase: u = tr Cov at every β) both curvatures are
    # rounding noise, and ~1e-11 bumps would otherwise count as transitions:
    # the second difference of u carries an error of 4 eps max|u| / (h1 h2) per
    # ulp of u, and u from a fixed point converged to 1e-10 is good to far fewer
    # than the 250 ulps allowed here (a real transition moves u by O(|u|)).
    gaps = np.diff(_grid_variable(b, variable))
    noise = np.full_like(h, np.inf)
    noise[1:-1] = 1e3 * np.finfo(np.float64).eps * np.max(np.abs(result.u[order])) / (gaps[:-1] * gaps[1:])
    ok &= h > noise
    h = np.where(ok, h, -np.inf)
    n_fp = result.distinct[order]
    peaks = []
    for j in range(1, len(b) - 1):
        if ok[j] and h[j] > 0 and h[j] >= h[j - 1] and h[j] >= h[j + 1] and (h[j] > h[j - 1] or h[j] > h[j + 1]):
            peaks.append(CriticalPoint(beta=float(b[j]), height=float(h[j]), index=int(order[j]),
                                       jump=bool(fd[j] > pointwise[j]),
                                       fixed_points_below=int(n_fp[j - 1]), fixed_points_above=int(n_fp[j + 1])))
    peaks.sort(key=lambda p: -p.height)
    return peaks[:top_k]


@functools.partial(jax.jit, static_argnames=("newton_steps", "spectral_iters"))
def _branch_point(x, beta, log_prior, psi, newton_steps, spectral_iters):
    """Newton's method on ψ − F(ψ) = 0 from ψ (stays on that branch even where
    it is unstable), then ρ(∂F/∂ψ) there."""

    def newton(i, p):
        r = _step(p, x, beta, log_prior) - p
        f = tile_jacobian.jacobian_factors(p, x, beta, log_prior)
        return p + tile_jacobian.woodbury_solve_factors(f, r)

    p = jax.lax.fori_loop(0, newton_steps, newton, psi)
    res = jnp.sqrt(jnp.sum((_step(p, x, beta, log_prior) - p) ** 2))
    return p, res, tile_jacobian.spectral_radius(p, x, beta, log_prior, num_iter=spectral_iters)


def refine_bracket(x, grid: LatentGrid, beta_low: float, beta_high: float, psi_high, *,
                   iterations: int = 40, newton_steps: int = 8, spectral_iters: int = 2000):
    """β_c between ``beta_low`` < ``beta_high`` by bisection on stability.

    ``psi_high`` (K, d) is the (merged) stable fixed point at ``beta_high``. At
    each midpoint the branch through it is continued by Newton's method (which
    converges to the branch's root whether or not it is stable) and declared
    stable when ρ(∂F/∂ψ) < 1 and Newton stayed on the branch (the same number of
    distinct fixed points as ``psi_high``). Returns (β_c, ρ at the upper end of the final
    bracket): the β where the merged branch loses stability on cooling — for the
    collapse of a Gaussian blob exactly λ_max of its covariance; for a
    discontinuous transition, the lower edge of the merged branch's range.
    """
    if not (0 < beta_low < beta_high):
        raise ValueError(f"need 0 < beta_low < beta_high, got {beta_low}, {beta_high}")
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    lp = jnp.asarray(grid.log_prior, dtype)
    psi = jnp.asarray(psi_high, dtype)
    lo, hi, rho_hi = float(beta_low), float(beta_high), float("nan")
    merge_tol = default_merge_tol(np.asarray(x))
    groups = count_distinct(np.asarray(psi_high, np.float64), merge_tol)
    for _ in range(iterations):
        mid = float(np.sqrt(lo * hi))
        p, res, rho = _branch_point(x, jnp.asarray(mid, dtype), lp, psi, newton_steps, spectral_iters)
        # Near a pitchfork I − ∂F/∂ψ is nearly singular and Newton can jump to
        # the bifurcating (split) branch, which is stable: a change in the number
        # of distinct fixed points means the merged branch was not followed.
        same_branch = count_distinct(np.asarray(p, np.float64), merge_tol) == groups
        if bool(rho < 1.0) and bool(jnp.isfinite(res)) and same_branch:
            hi, psi, rho_hi = mid, p, float(rho)
        else:
            lo = mid
        if hi / lo - 1 < 1e-10:
            break
    return hi, rho_hi


def refine_critical_beta(result: SweepResult, point: CriticalPoint, x, grid: LatentGrid, **kwargs) -> float:
    """Refine a detected β_c beyond the sweep's resolution: :func:`refine_bracket`
    on the sweep points either side of the peak, following the merged branch
    from the fixed point just above it."""
    order = np.argsort(result.beta)
    pos = int(np.nonzero(order == point.index)[0][0])
    if pos == 0 or pos == len(order) - 1:
        raise ValueError("a peak at the end of the sweep cannot be bracketed")
    lo, hi = order[pos - 1], order[pos + 1]
    beta_c, _ = refine_bracket(x, grid, float(result.beta[lo]), float(result.beta[hi]), result.psi[hi], **kwargs)
    return beta_c
