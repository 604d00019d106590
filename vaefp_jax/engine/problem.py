"""One fixed-point problem as the iterations see it: a step map, a constraint and their data.

A :class:`Problem` is built inside the trace of a solve, one per β (under
``vmap`` its arrays are batched): the data x (n, d), log π (K,), the constraint's
shared arrays, and ``theta``, the per-problem values (``beta`` and, for a
constraint, ``strength`` or ``L``). It is the only thing an iteration touches,
so every iteration composes with every step map and constraint.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaefp_jax.equations import MapValue

__all__ = ["Problem"]


@dataclasses.dataclass(frozen=True)
class Problem:
    step_map: object
    constraint: object
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

    def update(self, psi, aux, t):
        """(target (K, d), aux, MapValue): the constrained image of ψ, the constraint's
        new state, and the map value it came from (its free energy is f(ψ))."""
        value = self.evaluate(psi)
        target, aux = self.constraint.update(value, psi, aux, t, self)
        return target, aux, value

    def free_energy(self, psi):
        return self.evaluate(psi).free_energy(self.beta)

    def with_theta(self, theta) -> "Problem":
        return dataclasses.replace(self, theta=theta)


def residual(a, b):
    """‖a − b‖_F."""
    return jnp.sqrt(jnp.sum((a - b) ** 2))
