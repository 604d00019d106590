r"""Phase detection: u(β), ∂u/∂β, ∂²u/∂β² through the converged fixed point, for any solve.

The order parameter at the fixed point, u(β) = U(ψ*(β), β) (Section 2.2), is
differentiated *through the solution*: ψ*(β) is wrapped by
:func:`vaefp_jax.implicit.implicit_fixed_point`, whose custom JVP applies
dψ* = (I − ∂G/∂ψ)⁻¹ ∂G/∂β dβ and is itself differentiable, so one nested
forward-mode pass gives u, u′ and u″ per β. G is the map the forward solve
iterated — the same step map and the same constraint (for
:class:`~vaefp_jax.LipschitzStrength`, the projected map Pᵀ F) — so the
derivatives are those of the fixed points that were found. The solver's loop is
never unrolled. :func:`sweep` takes the strategy objects of :func:`vaefp_jax.solve`.

Two ways to visit β:

* independent solves (the paper): every β starts from the same grid
  initialisation and lands in whichever basin that start falls into; near a
  transition different β may pick different branches.
* continuation (``"cooling"`` or ``"heating"``): β visited in order, each from the
  previous fixed point plus a small perturbation (to break symmetries): one
  branch, deterministic annealing when cooling. Near a first-order-like
  transition cooling and heating disagree over a β range (hysteresis).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from vaefp_jax import _validate, operators
from vaefp_jax.clusters import count_distinct, default_merge_tol
from vaefp_jax.constraints.strategies import Constraint, Unconstrained
from vaefp_jax.engine.continuation import Continuation
from vaefp_jax.engine.initial import initial_batch
from vaefp_jax.engine.problem import Problem
from vaefp_jax.engine.schedules import Schedule
from vaefp_jax.engine.solution import Solution
from vaefp_jax.engine.solve import prepare, run, to_solution
from vaefp_jax.grid import LatentGrid
from vaefp_jax.implicit import (
    GMRES,
    Dense,
    Woodbury,
    implicit_fixed_point,
    spectral_radius,
)
from vaefp_jax.iterations.base import Iteration
from vaefp_jax.iterations.damped import Damped
from vaefp_jax.maps.base import StepMap
from vaefp_jax.maps.dense import DenseMap

__all__ = ["SweepResult", "sweep", "order_parameter_at_fixed_point", "default_linear_solver"]

DENSE_MAX_SIZE = 4096   # K·d up to which the dense Jacobian (K·d JVPs, one LU) is affordable


def default_linear_solver(constraint, num_points: int, num_tiles: int, dim: int, dtype=None,
                          step_map: StepMap | None = None):
    """The solve of least cost: :class:`Woodbury` (unconstrained map with the Woodbury factors,
    the dense map's, exact; its operations as :func:`vaefp_jax.operators.solve_costs` counts
    them) or :class:`Dense` (an LU of the (K d)² Jacobian, 2(K d)³/3, after K d map JVPs,
    :func:`~vaefp_jax.operators.product_cost` each; exact); :class:`GMRES` (map JVPs; a
    relative residual of 1e-10 in float64, 1e-5 in float32, at most 600 products) for the
    unconstrained map where Woodbury's (n, n) capacity matrix costs more than ~150 products
    (:func:`vaefp_jax.operators.prefers_krylov`: n above ~450), for a constrained map with
    K d > ``DENSE_MAX_SIZE``, and for any map without factors (``step_map``, default the dense
    map: the blocked map and a user's; K d JVPs at once would hold K d of its evaluations)."""
    n, K, d = num_points, num_tiles, dim
    step_map = DenseMap() if step_map is None else step_map
    tol = 1e-5 if dtype is not None and jnp.finfo(dtype).bits < 64 else 1e-10
    gmres = GMRES(tol=tol, restart=150, maxiter=4)
    dense_cost = operators.solve_costs(n, K, d)["dense"]
    if isinstance(constraint, Unconstrained):
        gmres = dataclasses.replace(gmres, step_map=step_map)   # products by the map's own Jacobian
        if not step_map.factored:
            return gmres
        woodbury_cost = operators.solve_costs(n, K, d)["woodbury"]
        if K * d <= DENSE_MAX_SIZE and dense_cost < woodbury_cost:
            return Dense()
        return gmres if operators.prefers_krylov(n, K, d) else Woodbury(step_map)
    return Dense() if K * d <= DENSE_MAX_SIZE else gmres


def _smooth_map(step_map, constraint, shared):
    """G(ψ, θ): the target of one undamped step, θ = {"x", "beta", "log_prior", …}."""

    def G(psi, theta):
        problem = Problem(step_map, constraint, theta["x"], theta["log_prior"], shared, theta)
        return problem.target(psi)[0]

    return G


def order_parameter_at_fixed_point(beta, x, log_prior, psi_star, *, step_map=None, constraint=None, shared=None,
                                   params=None, linear_solver=None):
    """u(β) = U(ψ*(β), β), differentiable in ``beta`` and ``x`` to any order.

    ``psi_star`` (K, d) must be a converged fixed point of the map at (β, x) (for
    example ``solve(...).psi[j]``); derivatives are taken along the branch through
    it. ``params``: the constraint's per-problem values (e.g. {"strength": s}) and
    ``shared`` its shared arrays (as :func:`vaefp_jax.engine.solve.prepare` makes them).
    """
    step_map = DenseMap() if step_map is None else step_map
    constraint = Unconstrained() if constraint is None else constraint
    if linear_solver is None:
        (n, d), K = jnp.shape(x), jnp.shape(psi_star)[0]
        linear_solver = default_linear_solver(constraint, n, K, d, jnp.result_type(psi_star), step_map)
    theta = {"x": x, "beta": beta, "log_prior": log_prior, **(params or {})}
    psi = implicit_fixed_point(_smooth_map(step_map, constraint, shared or {}), lambda t, p: p, theta,
                               linear_solver, psi_init=psi_star)
    return step_map.order_parameter(psi, x, beta, log_prior)


@functools.partial(jax.jit, static_argnames=("step_map", "constraint", "linear_solver", "spectral_iters", "spectral"))
def _derivatives(x, log_prior, shared, theta, psi, step_map, constraint, linear_solver, spectral_iters,
                 spectral="power"):
    G = _smooth_map(step_map, constraint, shared)

    def one(args):
        th, psi_star = args
        params = {k: v for k, v in th.items() if k != "beta"}
        u_fn = lambda b: order_parameter_at_fixed_point(b, x, log_prior, psi_star, step_map=step_map,
                                                        constraint=constraint, shared=shared, params=params,
                                                        linear_solver=linear_solver)
        du_fn = lambda b: jax.jvp(u_fn, (b,), (jnp.ones_like(b),))
        beta = th["beta"]
        (u, du), (_, d2u) = jax.jvp(du_fn, (beta,), (jnp.ones_like(beta),))
        if not spectral_iters:
            rho = jnp.asarray(jnp.nan, x.dtype)
        elif isinstance(constraint, Unconstrained):   # the map's Jacobian (the dense map's: O(K n d), no exp)
            op = step_map.jacobian(psi_star, x, beta, log_prior)
            rho = operators.SPECTRAL[spectral](op, psi_star, spectral_iters)[0]
        else:                                          # JVPs of the constrained map
            rho = spectral_radius(G, psi_star, {"x": x, "log_prior": log_prior, **th}, num_iter=spectral_iters)
        return u, du, d2u, rho

    # One β at a time: the (n, n) capacity solves are serial on CPU anyway
    # (vaefp_jax.linalg), and a β batch would multiply the (K, n, d) factors.
    return jax.lax.map(one, (theta, psi))


def _derivatives_in_chunks(x, setup, psi, constraint, linear_solver, spectral_iters, spectral, progress,
                           chunks: int = 8):
    """:func:`_derivatives` over the β in about ``chunks`` calls of one compiled shape (the last
    padded with its last β), so that ``progress("derivatives", done, B)`` can say how far the
    pass is and a bar how long it will take; one call without ``progress``."""
    num = int(psi.shape[0])
    size = num if progress is None else -(-num // min(chunks, num))
    parts = []
    for lo in range(0, num, size):
        take = np.minimum(np.arange(lo, lo + size), num - 1)      # pad by repeating the last β
        theta = jax.tree.map(lambda a: a[take], setup.theta)
        out = _derivatives(x, setup.log_prior, setup.shared, theta, psi[take], setup.step_map, constraint,
                           linear_solver, spectral_iters, spectral)
        parts.append([a[: min(size, num - lo)] for a in out])
        if progress is not None:
            jax.block_until_ready(out)
            progress("derivatives", min(lo + size, num), num)
    return tuple(jnp.concatenate(p) for p in zip(*parts))


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A β sweep with derivatives; NumPy arrays throughout, leading axis B.

    Attributes:
      solution: the :class:`~vaefp_jax.Solution` of the forward solve (as NumPy).
      u, du, d2u: (B,) u(β) and its first two derivatives along each fixed point's branch.
      spectral_radius: (B,) ρ(∂G/∂ψ) at the fixed point (NaN when not computed).
      distinct: (B,) distinct fixed points (groups of ψ_a closer than ``merge_tol``).
      merge_tol: the distance under which two ψ_a count as the same fixed point.
      step_map: the step map that found the fixed points (the default resolved), which a
        refinement of β_c should follow (:func:`~vaefp_jax.refine_bracket`).
    """

    solution: Solution
    u: np.ndarray
    du: np.ndarray
    d2u: np.ndarray
    spectral_radius: np.ndarray
    distinct: np.ndarray
    merge_tol: float
    step_map: StepMap | None = None

    beta = property(lambda self: self.solution.beta)
    psi = property(lambda self: self.solution.psi)
    status = property(lambda self: self.solution.status)
    steps = property(lambda self: self.solution.steps)
    residual = property(lambda self: self.solution.residual)
    trajectory = property(lambda self: self.solution.trajectory)
    converged = property(lambda self: self.solution.converged)

    def __repr__(self):
        return f"SweepResult({self.solution!r}, u ∈ [{np.min(self.u):.4g}, {np.max(self.u):.4g}])"


def sweep(x: ArrayLike, betas: ArrayLike, grid: LatentGrid, *, iteration: Iteration | None = None,
          step_map: StepMap | None = None, constraint: Constraint | None = None, schedule: Schedule | None = None,
          linear_solver: Callable[..., jax.Array] | None = None, psi0: ArrayLike | None = None,
          key: jax.Array | None = None, continuation: str | None = None, kick: float = 1e-4,
          spectral_iters: int = 300, spectral: str = "power", record_every: int = 0,
          throw: bool | None = None, progress: Callable[..., None] | None = None) -> SweepResult:
    """Fixed points, u, u′, u″ and ρ for every β of ``betas`` (B,).

    Args:
      x: (n, d) data (float64 recommended for u″: enable JAX x64).
      betas: (B,) β > 0 (any order; sorted for the figures).
      grid: tile basis.
      iteration: as in :func:`vaefp_jax.solve`; the default iteration is :meth:`Damped.tight`
        (derivatives need accurate fixed points).
      step_map: as in :func:`vaefp_jax.solve`.
      constraint: as in :func:`vaefp_jax.solve`. The constraint must be smooth
        (not :class:`LipschitzBound`).
      schedule: as in :func:`vaefp_jax.solve`.
      psi0: as in :func:`vaefp_jax.solve`.
      key: as in :func:`vaefp_jax.solve`.
      record_every: as in :func:`vaefp_jax.solve`.
      throw: as in :func:`vaefp_jax.solve`.
      linear_solver: the solve of the implicit derivative; default
        :func:`default_linear_solver`.
      continuation: None (independent solves from ψ^0, the paper), "cooling" (β from
        largest to smallest, each from the previous fixed point) or "heating": the
        schedule :class:`~vaefp_jax.engine.continuation.Continuation` (``schedule`` must be None).
      kick: half-width of the perturbation at each continuation step, relative to
        the data's RMS spread.
      spectral_iters: steps of the estimate of ρ (0 to skip).
      spectral: "power" (power iteration, any ψ) or "lanczos" (Lanczos on the symmetrised
        Jacobian of the unconstrained map, exact at a fixed point: ~50 steps resolve ρ
        near 1 where power iteration needs thousands; see :func:`vaefp_jax.operators.lanczos`).
      progress: None, or a callable ``progress(stage, done, total)`` told of each β of a
        continuation as it ends (stage "sweep") and of the derivative pass (stage
        "derivatives", as each of its chunks of β ends), e.g. to drive a progress bar.
    """
    iteration = Damped.tight() if iteration is None else iteration
    if continuation is not None:
        if schedule is not None:
            raise ValueError("a continuation visits β one after another: leave schedule=None")
        schedule = Continuation(continuation, kick)
    _validate.check_positive("kick", kick, allow_zero=True)
    operators.spectral_estimate(spectral)
    s = prepare(x, betas, grid, iteration=iteration, step_map=step_map, constraint=constraint, schedule=schedule,
                record_every=record_every)
    if not s.constraint.smooth:
        raise ValueError(f"u′ and u″ need a map that is smooth in β: {s.constraint!r} is not (use "
                         "LipschitzStrength, or solve() for the fixed points alone)")
    xj, dtype = s.x, s.dtype
    (n, d), K = xj.shape, grid.num_tiles
    if linear_solver is None:
        linear_solver = default_linear_solver(s.constraint, n, K, d, dtype, s.step_map)
    key = jax.random.PRNGKey(0) if key is None else key
    static_c = s.constraint.static()
    psi0 = initial_batch(xj, grid, psi0, s.iteration.init_noise, key, s.num, dtype, broadcast=False)
    out = run(s, psi0, key, record_every, progress)
    solution = to_solution(s, out)
    u, du, d2u, rho = _derivatives_in_chunks(xj, s, solution.psi, static_c, linear_solver, int(spectral_iters),
                                             spectral, progress)
    solution = jax.device_get(solution)
    merge_tol = default_merge_tol(np.asarray(xj))
    result = SweepResult(solution=solution, u=np.asarray(u), du=np.asarray(du), d2u=np.asarray(d2u),
                         spectral_radius=np.asarray(rho),
                         distinct=np.asarray(count_distinct(np.asarray(solution.psi), merge_tol)),  # (B,)
                         merge_tol=merge_tol, step_map=s.step_map)
    solution.check(throw, stacklevel=2)
    return result
