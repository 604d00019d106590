"""vaefp_jax: fixed points, phase transitions and tilings of high-capacity β-VAEs.

An implementation of the theory of D. J. Rezende and F. Viola, "On the
properties of high-capacity VAEs" (2018), in JAX.

Modules: ``grid`` (tile bases), ``fixed_point`` (the map of eq. 14–15),
``solver`` (batched sweeps), ``implicit`` (implicit differentiation),
``tile_jacobian`` (the map's structured Jacobian), ``linalg`` (every dense
solve; never a batched LAPACK call on CPU), ``phase`` (u(β), u', u'',
β_c), ``accelerate`` (near-critical solver), ``lipschitz`` (Appendix B),
``propositions`` (Props. 2–5), ``datasets``, ``io``, ``clusters``,
``sharding``, ``streaming`` and ``fused`` (scale), ``mnist`` and ``vae`` (Figure 1),
``figures``.
"""

from vaefp_jax import datasets, lipschitz, phase, propositions
from vaefp_jax.accelerate import solve_accelerated
from vaefp_jax.lipschitz import solve_lipschitz, solve_lipschitz_constraint
from vaefp_jax.sharding import solve_sharded
from vaefp_jax.streaming import solve_streamed, step_streamed
from vaefp_jax.fused import FusedMap, step_fused
from vaefp_jax.fixed_point import free_energy, log_m, order_parameter, squared_distances, step, tile_posterior
from vaefp_jax.grid import LatentGrid
from vaefp_jax.implicit import implicit_fixed_point
from vaefp_jax.phase import SweepResult, critical_betas, refine_critical_beta, sweep
from vaefp_jax.solver import Protocol, SolveResult, initial_psi, solve

__version__ = "0.1.0"

__all__ = [
    "FusedMap",
    "LatentGrid",
    "Protocol",
    "SolveResult",
    "SweepResult",
    "critical_betas",
    "datasets",
    "free_energy",
    "implicit_fixed_point",
    "lipschitz",
    "propositions",
    "solve_accelerated",
    "solve_lipschitz",
    "solve_lipschitz_constraint",
    "solve_sharded",
    "solve_streamed",
    "step_fused",
    "step_streamed",
    "initial_psi",
    "log_m",
    "order_parameter",
    "phase",
    "refine_critical_beta",
    "solve",
    "squared_distances",
    "step",
    "sweep",
    "tile_posterior",
]
