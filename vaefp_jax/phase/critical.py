"""Critical temperatures: peaks of the curvature of u(β), refined by bisection on stability.

β_c are the local maxima of |∂²u/∂β²| (Figure 3, bottom right), or of the
finite-difference curvature where u jumps between sweep points. At a
transition the spectral radius ρ of ∂F/∂ψ at the stable fixed point tends to 1
(at the collapsed point it is λ_max(Cov)/β), which :func:`refine_critical_beta`
uses to locate β_c beyond the sweep's resolution.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from vaefp_jax import operators
from vaefp_jax.clusters import count_distinct, default_merge_tol
from vaefp_jax.engine.solve import solve
from vaefp_jax.equations import working_dtype
from vaefp_jax.grid import LatentGrid
from vaefp_jax.iterations.newton import Newton
from vaefp_jax.maps.base import StepMap
from vaefp_jax.maps.dense import DenseMap

__all__ = ["CriticalPoint", "critical_betas", "curvature", "refine_bracket", "refine_critical_beta"]


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


def curvature(result, variable: str = "beta") -> tuple[np.ndarray, np.ndarray]:
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


def critical_betas(result, top_k: int = 3, variable: str = "beta") -> list[CriticalPoint]:
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


def refine_bracket(x, grid: LatentGrid, beta_low: float, beta_high: float, psi_high, *,
                   iterations: int = 30, newton_steps: int = 8, spectral_iters: int = 48,
                   spectral: str = "lanczos", newton_solve: str = "auto", step_map: StepMap | None = None):
    """β_c between ``beta_low`` < ``beta_high`` by bisection on stability.

    ``psi_high`` (K, d) is the (merged) stable fixed point at ``beta_high``. At
    each midpoint the branch through it is continued by Newton's method (which
    converges to the branch's root whether or not it is stable) and declared
    stable when ρ(∂F/∂ψ) < 1 and Newton stayed on the branch (the same number of
    distinct fixed points as ``psi_high``). Each midpoint is one :func:`vaefp_jax.solve` with
    the :class:`~vaefp_jax.iterations.Newton` iteration (at most ``newton_steps`` steps, none
    once ‖F(ψ) − ψ‖_F is at the rounding level of the map, 100 eps max|x| √(K d)), which
    reports ρ at its answer. Returns (β_c, ρ at the upper end of the final
    bracket): the β where the merged branch loses stability on cooling — for the
    collapse of a Gaussian blob exactly λ_max of its covariance; for a
    discontinuous transition, the lower edge of the merged branch's range.

    ``spectral``: how ρ is estimated at each midpoint, "lanczos" (default:
    ``spectral_iters`` Lanczos steps on the symmetrised Jacobian, valid because
    Newton ends at a fixed point; ~50 steps resolve ρ near 1 where power iteration
    needs thousands) or "power" (power iterations, no symmetry assumed).
    ``newton_solve``: the linear solve of each Newton step, as in :class:`~vaefp_jax.Accelerated`
    ("auto": Woodbury, or GMRES for n above ~450 or a map without factors).
    ``step_map``: the map whose branch is followed, and whose Jacobian the Newton steps and ρ
    use (default :class:`~vaefp_jax.maps.DenseMap`; as in :func:`vaefp_jax.solve`).
    ``iterations`` halvings: 30 take a bracket of one sweep spacing to ~1e-10
    relative.
    """
    if not (0 < beta_low < beta_high):
        raise ValueError(f"need 0 < beta_low < beta_high, got {beta_low}, {beta_high}")
    operators.spectral_estimate(spectral)
    step_map = DenseMap() if step_map is None else step_map
    if not isinstance(step_map, StepMap):
        raise ValueError(f"step_map must be a StepMap, got {step_map!r}")
    (n, _), (K, d) = np.shape(x), np.shape(psi_high)
    step_map.check(n, K, d)
    solve_name = operators.newton_solve_name(newton_solve, n, K, d, step_map.factored)
    dtype = working_dtype(jnp.asarray(x).dtype)
    x = jnp.asarray(x, dtype)
    psi = jnp.asarray(psi_high, dtype)
    lo, hi, rho_hi = float(beta_low), float(beta_high), float("nan")
    merge_tol = default_merge_tol(np.asarray(x))
    groups = count_distinct(np.asarray(psi_high, np.float64), merge_tol)
    newton = Newton(tol=float(100 * np.finfo(dtype).eps * np.max(np.abs(np.asarray(x))) * np.sqrt(K * d)),
                    max_steps=newton_steps, newton_solve=solve_name, spectral=spectral, spectral_iters=spectral_iters)
    for _ in range(iterations):
        mid = float(np.sqrt(lo * hi))
        sol = solve(x, jnp.asarray([mid], dtype), grid, iteration=newton, step_map=step_map, psi0=psi, throw=False)
        p, res, rho = sol.psi[0], sol.residual[0], sol.stats["spectral_radius"][0]
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


def refine_critical_beta(result, point: CriticalPoint, x, grid: LatentGrid, **kwargs) -> float:
    """Refine a detected β_c beyond the sweep's resolution: :func:`refine_bracket`
    on the sweep points either side of the peak, following the merged branch
    from the fixed point just above it."""
    order = np.argsort(result.beta)
    pos = int(np.nonzero(order == point.index)[0][0])
    if pos == 0 or pos == len(order) - 1:
        raise ValueError("a peak at the end of the sweep cannot be bracketed")
    lo, hi = order[pos - 1], order[pos + 1]
    kwargs.setdefault("step_map", getattr(result, "step_map", None))
    beta_c, _ = refine_bracket(x, grid, float(result.beta[lo]), float(result.beta[hi]), result.psi[hi], **kwargs)
    return beta_c
