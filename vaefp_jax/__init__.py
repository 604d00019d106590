"""vaefp_jax: fixed points, phase transitions and tilings of high-capacity β-VAEs.

An implementation of the theory of D. J. Rezende and F. Viola, "On the
properties of high-capacity VAEs" (2018), in JAX.
"""

from vaefp_jax import datasets
from vaefp_jax.fixed_point import free_energy, log_m, order_parameter, squared_distances, step, tile_posterior
from vaefp_jax.grid import LatentGrid
from vaefp_jax.solver import Protocol, SolveResult, initial_psi, solve

__version__ = "0.1.0"

__all__ = [
    "LatentGrid",
    "Protocol",
    "SolveResult",
    "datasets",
    "free_energy",
    "initial_psi",
    "log_m",
    "order_parameter",
    "solve",
    "squared_distances",
    "step",
    "tile_posterior",
]
