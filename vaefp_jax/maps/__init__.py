"""Step maps: strategies that evaluate eq. (14)–(15) (dense, blocked, Pallas)."""

from vaefp_jax.maps.auto import default_step_map as default_step_map
from vaefp_jax.maps.base import StepMap as StepMap
from vaefp_jax.maps.blocked import BlockedMap as BlockedMap
from vaefp_jax.maps.dense import DenseMap as DenseMap
from vaefp_jax.maps.pallas import PallasMap as PallasMap

__all__ = ["StepMap", "DenseMap", "BlockedMap", "PallasMap", "default_step_map"]
