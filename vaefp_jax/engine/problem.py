"""One fixed-point problem as the iterations see it: a step map, a constraint and their data.

A :class:`Problem` is built inside the trace of a solve, one per β (under
``vmap`` its arrays are batched): the data x (n, d), log π (K,), the constraint's
shared arrays, and ``theta``, the per-problem values (``beta`` and, for a
constraint, ``strength`` or ``L``). It is the only thing an iteration touches,
so every iteration composes with every step map and constraint.

What an iteration carries from step to step besides ψ is a :class:`ProblemState`:
the constraint's state and the step map's (:meth:`StepMap.evaluate_warm`). Iterations
pass it through without looking inside; the engine hands the constraint part to the
constraint's report.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from vaefp_jax.equations import MapValue

if TYPE_CHECKING:   # annotations only: importing them here would make an import cycle
    from vaefp_jax.constraints.strategies import Constraint
    from vaefp_jax.maps.base import StepMap

__all__ = ["Problem", "ProblemState"]


class ProblemState(NamedTuple):
    """``aux``: the constraint's state; ``map_state``: the step map's (``()`` for most)."""

    aux: object
    map_state: object


@dataclasses.dataclass(frozen=True)
class Problem:
    step_map: StepMap
    constraint: Constraint
    x: jax.Array
    log_prior: jax.Array
    shared: dict
    theta: dict

    @property
    def beta(self):
        return self.theta["beta"]

    def evaluate(self, psi) -> MapValue:
        """The map of eq. (14)–(15) at ψ (K, d), by this problem's step map."""
        return self.step_map.evaluate(psi, self.x, self.beta, self.log_prior)

    def jacobian(self, psi):
        """∂F/∂ψ of the unconstrained map at ψ, as the step map gives it (:mod:`vaefp_jax.operators`)."""
        return self.step_map.jacobian(psi, self.x, self.beta, self.log_prior)

    def init_state(self, psi0) -> ProblemState:
        """The state before the first step from ψ0 (K, d)."""
        return ProblemState(aux=self.constraint.init_aux(psi0),
                            map_state=self.step_map.init_state(self.x.shape[0], psi0.shape[0], psi0.dtype))

    def target(self, psi, aux=(), t=0):
        """(target (K, d), aux', MapValue) from the map's ``evaluate``: the constrained image
        of ψ as a function of ψ alone, differentiable to any order (what implicit
        derivatives differentiate; the iterations use :meth:`update`)."""
        return self._constrained(self.evaluate(psi), psi, aux, t)

    def update(self, psi, state: ProblemState, t):
        """(target (K, d), state', MapValue): the constrained image of ψ, the new state
        (the constraint's, and the map's from this evaluation), and the map value it came
        from (its free energy is f(ψ))."""
        value, map_state = self.step_map.evaluate_warm(psi, self.x, self.beta, self.log_prior, state.map_state)
        target, aux, value = self._constrained(value, psi, state.aux, t)
        return target, ProblemState(aux=aux, map_state=map_state), value

    def _constrained(self, value, psi, aux, t):
        target, aux = self.constraint.update(value, psi, aux, t, self)
        return target, aux, value

    def free_energy(self, psi):
        return self.evaluate(psi).free_energy(self.beta)


def residual(a, b):
    """‖a − b‖_F."""
    return jnp.sqrt(jnp.sum((a - b) ** 2))
