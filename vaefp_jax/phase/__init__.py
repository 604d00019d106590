"""Phase analysis: sweeps with u, u′, u″ (:mod:`.sweep`) and critical temperatures (:mod:`.critical`)."""

from vaefp_jax.phase.critical import CriticalPoint as CriticalPoint
from vaefp_jax.phase.critical import critical_betas as critical_betas
from vaefp_jax.phase.critical import curvature as curvature
from vaefp_jax.phase.critical import refine_bracket as refine_bracket
from vaefp_jax.phase.critical import refine_critical_beta as refine_critical_beta
from vaefp_jax.phase.sweep import SweepResult as SweepResult
from vaefp_jax.phase.sweep import default_linear_solver as default_linear_solver
from vaefp_jax.phase.sweep import (
           order_parameter_at_fixed_point as order_parameter_at_fixed_point,
)
from vaefp_jax.phase.sweep import sweep as sweep

__all__ = ["SweepResult", "sweep", "order_parameter_at_fixed_point", "default_linear_solver", "CriticalPoint",
           "curvature", "critical_betas", "refine_bracket", "refine_critical_beta"]
