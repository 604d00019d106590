"""Phase analysis: the reduced model's split tree (:mod:`.reduced`, :mod:`.annealing`,
:mod:`.split_analysis`, :mod:`.split_result`); sweeps with u, u′, u″ (:mod:`.sweep`), critical
temperatures (:mod:`.critical`), the β range of a data set (:mod:`.scales`), the merge tree and
point labels (:mod:`.tree`), and the whole analysis of a data set (:mod:`.analysis`) with its result
(:mod:`.result`)."""

from vaefp_jax.phase.analysis import phase_analysis as phase_analysis
from vaefp_jax.phase.analysis import standardize as standardize
from vaefp_jax.phase.critical import CriticalPoint as CriticalPoint
from vaefp_jax.phase.critical import critical_betas as critical_betas
from vaefp_jax.phase.critical import curvature as curvature
from vaefp_jax.phase.critical import refine_bracket as refine_bracket
from vaefp_jax.phase.critical import refine_critical_beta as refine_critical_beta
from vaefp_jax.phase.result import CriticalRow as CriticalRow
from vaefp_jax.phase.result import PhaseResult as PhaseResult
from vaefp_jax.phase.scales import default_beta_range as default_beta_range
from vaefp_jax.phase.split_analysis import split_analysis as split_analysis
from vaefp_jax.phase.split_result import SplitResult as SplitResult
from vaefp_jax.phase.sweep import SweepResult as SweepResult
from vaefp_jax.phase.sweep import default_linear_solver as default_linear_solver
from vaefp_jax.phase.sweep import (
           order_parameter_at_fixed_point as order_parameter_at_fixed_point,
)
from vaefp_jax.phase.sweep import sweep as sweep
from vaefp_jax.phase.tree import Merge as Merge
from vaefp_jax.phase.tree import MergeTree as MergeTree

__all__ = [
           "CriticalPoint",
           "CriticalRow",
           "Merge",
           "MergeTree",
           "PhaseResult",
           "SplitResult",
           "SweepResult",
           "critical_betas",
           "curvature",
           "default_beta_range",
           "default_linear_solver",
           "order_parameter_at_fixed_point",
           "phase_analysis",
           "refine_bracket",
           "refine_critical_beta",
           "split_analysis",
           "standardize",
           "sweep",
]
