"""vaefp_jax: fixed points, phase transitions and tilings of high-capacity β-VAEs.

An implementation of the theory of D. J. Rezende and F. Viola, "On the
properties of high-capacity VAEs" (2018), in JAX.

One entry point per problem, with the ways of solving it as strategy objects:

* :func:`solve` — fixed points of eq. (14)–(15) for many β, with an *iteration*
  (:class:`Damped`, :class:`Accelerated`), a *step map* (:class:`DenseMap`,
  :class:`BlockedMap`, :class:`PallasMap`), a *constraint* (:class:`Unconstrained`,
  :class:`LipschitzStrength`, :class:`LipschitzBound`) and a *schedule*
  (:class:`Pool`, :class:`Vmapped`, :class:`Sharded`); returns a :class:`Solution`
  with a :class:`Status` per β.
* :func:`sweep` — the same objects, plus u, u′, u″ by implicit differentiation
  and the spectral radius (phase detection); :func:`critical_betas`,
  :func:`refine_critical_beta`.

Packages: ``equations`` (eq. 14–15, the reference), ``maps``, ``constraints``
(Appendix B), ``iterations``, ``engine``, ``implicit`` and ``tile_jacobian``
(derivatives), ``phase``, ``linalg`` (every dense solve; never a batched LAPACK
call on CPU), ``propositions`` (Props. 2–5), ``datasets``, ``io``, ``clusters``,
``mnist`` and ``vae`` (Figure 1), ``figures``.
"""

from vaefp_jax import constraints, datasets, equations, propositions
from vaefp_jax.constraints import LipschitzBound, LipschitzStrength, Unconstrained
from vaefp_jax.engine.initial import initial_psi
from vaefp_jax.engine.schedules import Pool, Vmapped
from vaefp_jax.engine.sharded import Sharded
from vaefp_jax.engine.solution import NotConvergedError, Solution, Status
from vaefp_jax.engine.solve import solve
from vaefp_jax.equations import (
    free_energy,
    log_m,
    order_parameter,
    squared_distances,
    step,
    tile_posterior,
)
from vaefp_jax.grid import LatentGrid
from vaefp_jax.implicit import GMRES, Dense, Woodbury, implicit_fixed_point
from vaefp_jax.iterations import Accelerated, Damped
from vaefp_jax.maps import BlockedMap, DenseMap, PallasMap
from vaefp_jax.phase import (
    CriticalPoint,
    SweepResult,
    critical_betas,
    refine_critical_beta,
    sweep,
)

__version__ = "0.2.0"

__all__ = [
    "Accelerated", "BlockedMap", "CriticalPoint", "Damped", "Dense", "DenseMap", "GMRES", "LatentGrid",
    "LipschitzBound", "LipschitzStrength", "NotConvergedError", "PallasMap", "Pool", "Sharded", "Solution",
    "Status", "SweepResult", "Unconstrained", "Vmapped", "Woodbury", "constraints", "critical_betas", "datasets",
    "equations", "free_energy", "implicit_fixed_point", "initial_psi", "log_m", "order_parameter", "propositions",
    "refine_critical_beta", "solve", "squared_distances", "step", "sweep", "tile_posterior",
]
