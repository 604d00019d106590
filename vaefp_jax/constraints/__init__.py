"""Constraints on the decoder (Appendix B, Proposition 6): strategies and their geometry."""

from vaefp_jax.constraints.geometry import (
           lipschitz_coefficients as lipschitz_coefficients,
)
from vaefp_jax.constraints.geometry import strength_scale as strength_scale
from vaefp_jax.constraints.geometry import support_mask as support_mask
from vaefp_jax.constraints.geometry import tile_kernel as tile_kernel
from vaefp_jax.constraints.geometry import tile_moments as tile_moments
from vaefp_jax.constraints.projection import laplacian as laplacian
from vaefp_jax.constraints.projection import lipschitz_step as lipschitz_step
from vaefp_jax.constraints.projection import pair_weights as pair_weights
from vaefp_jax.constraints.projection import project as project
from vaefp_jax.constraints.projection import projection_operator as projection_operator
from vaefp_jax.constraints.projection import violation as violation
from vaefp_jax.constraints.strategies import Constraint as Constraint
from vaefp_jax.constraints.strategies import LipschitzBound as LipschitzBound
from vaefp_jax.constraints.strategies import LipschitzStrength as LipschitzStrength
from vaefp_jax.constraints.strategies import Unconstrained as Unconstrained

__all__ = ["Constraint", "Unconstrained", "LipschitzStrength", "LipschitzBound", "tile_moments", "tile_kernel",
           "lipschitz_coefficients", "support_mask", "strength_scale", "pair_weights", "laplacian", "project",
           "projection_operator", "violation", "lipschitz_step"]
