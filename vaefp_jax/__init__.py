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
* :func:`split_analysis` — the phase diagram by the reduced model (Prop. 5): the
  split tree by continuation on cooling, every β_c the exact root of
  λ_max(C_a(β)) = β, nested labels, as a :class:`SplitResult` (``plot``, ``save``,
  :func:`load`); ``vaefp phase``'s default.
* :func:`phase_analysis` — the tile-grid analysis of a data set: β range from the
  data, sweep, critical temperatures, the merge tree and the cluster label of
  every point at each level, as a :class:`PhaseResult` (``plot``, ``save``,
  :func:`load`).

Packages: ``equations`` (eq. 14–15, the reference), ``maps``, ``constraints``
(Appendix B), ``iterations``, ``engine``, ``operators`` (a step map's Jacobian, its
solves and spectral estimates), ``implicit`` and ``tile_jacobian`` (derivatives),
``phase``, ``linalg`` (every dense solve; never a batched LAPACK call on CPU),
``propositions`` (Props. 2–5), ``datasets``, ``io``, ``clusters``, ``runs`` (saved
results), ``mnist`` and ``vae`` (Figure 1), ``figures``, ``native`` (the C++ CPU kernel of
the dense map's one pass, compiled on first use; ``native.status()``).

Attributes are imported on first use, so that ``import vaefp_jax`` (and the
``vaefp`` command line) does not import JAX until something needs it.
"""

from __future__ import annotations

import importlib

__version__ = "0.4.0"

# public name -> the module that defines it
_EXPORTS = {
    "LipschitzBound": "vaefp_jax.constraints",
    "LipschitzStrength": "vaefp_jax.constraints",
    "Unconstrained": "vaefp_jax.constraints",
    "initial_psi": "vaefp_jax.engine.initial",
    "Pool": "vaefp_jax.engine.schedules",
    "Vmapped": "vaefp_jax.engine.schedules",
    "Sharded": "vaefp_jax.engine.sharded",
    "Continuation": "vaefp_jax.engine.continuation",
    "NotConvergedError": "vaefp_jax.engine.solution",
    "Solution": "vaefp_jax.engine.solution",
    "Status": "vaefp_jax.engine.solution",
    "solve": "vaefp_jax.engine.solve",
    "free_energy": "vaefp_jax.equations",
    "log_m": "vaefp_jax.equations",
    "order_parameter": "vaefp_jax.equations",
    "squared_distances": "vaefp_jax.equations",
    "step": "vaefp_jax.equations",
    "tile_posterior": "vaefp_jax.equations",
    "LatentGrid": "vaefp_jax.grid",
    "GMRES": "vaefp_jax.implicit",
    "Dense": "vaefp_jax.implicit",
    "Woodbury": "vaefp_jax.implicit",
    "implicit_fixed_point": "vaefp_jax.implicit",
    "Accelerated": "vaefp_jax.iterations",
    "Damped": "vaefp_jax.iterations",
    "Newton": "vaefp_jax.iterations",
    "BlockedMap": "vaefp_jax.maps",
    "DenseMap": "vaefp_jax.maps",
    "StepMap": "vaefp_jax.maps",
    "PallasMap": "vaefp_jax.maps",
    "CriticalPoint": "vaefp_jax.phase",
    "SweepResult": "vaefp_jax.phase",
    "critical_betas": "vaefp_jax.phase",
    "refine_critical_beta": "vaefp_jax.phase",
    "sweep": "vaefp_jax.phase",
    "MergeTree": "vaefp_jax.phase",
    "PhaseResult": "vaefp_jax.phase",
    "default_beta_range": "vaefp_jax.phase",
    "phase_analysis": "vaefp_jax.phase",
    "SplitResult": "vaefp_jax.phase",
    "split_analysis": "vaefp_jax.phase",
    "SweepRun": "vaefp_jax.runs",
    "load": "vaefp_jax.results",
}
_SUBMODULES = ("clusters", "constraints", "datasets", "engine", "equations", "figures", "grid", "implicit", "io",
               "iterations", "linalg", "maps", "mnist", "native", "operators", "phase", "precision", "propositions",
               "results", "runs", "tile_jacobian", "vae")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"vaefp_jax.{name}")
    raise AttributeError(f"module 'vaefp_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
