"""Iterations: strategies that drive one fixed-point problem (damped, accelerated; Newton on a branch)."""

from vaefp_jax.iterations.accelerated import Accelerated as Accelerated
from vaefp_jax.iterations.base import Iteration as Iteration
from vaefp_jax.iterations.base import Outcome as Outcome
from vaefp_jax.iterations.damped import Damped as Damped
from vaefp_jax.iterations.newton import Newton as Newton

__all__ = ["Iteration", "Outcome", "Damped", "Accelerated", "Newton"]
