"""What a step map is: the strategy that evaluates eq. (14)–(15) for the engine.

A step map is an immutable, hashable object (a static argument of ``jit``) with

* ``evaluate(psi (K, d), x (n, d), beta (), log_prior (K,)) -> MapValue``: F(ψ)
  and the normalisers log c_i and log Σ_i m_ib of
  :class:`vaefp_jax.equations.MapValue` (free energy, aggregate posterior);
* ``order_parameter(psi, x, beta, log_prior) -> ()``: u of Section 2.2;
* ``init_state(n, K, dtype)`` and ``evaluate_warm(psi, x, beta, log_prior, state) ->
  (MapValue, state)``: the same value from what the map kept of its previous
  evaluation in the same iteration (the dense map keeps the normalisers, which spare it
  two passes over the logits: :func:`vaefp_jax.equations.evaluate_shifted`). The state
  is explicit: the iteration carries it (:class:`vaefp_jax.engine.problem.ProblemState`);
  by default it is ``()`` and ``evaluate_warm`` is ``evaluate``;
* ``lane_shape(n, K)``: the logits one β holds at once (sizes the default batch);
* ``check(n, K, d)``: raises ``ValueError`` for a problem the map cannot do;
* ``jacobian(psi, x, beta, log_prior)``: ∂F/∂ψ at ψ as an operator of
  :mod:`vaefp_jax.operators` (J v, Jᵀ v, the tile masses, and where ``factored`` the
  structured factors of the Woodbury solve). By default products are derivatives of
  ``evaluate`` (:func:`~vaefp_jax.operators.linearized`), so a new map needs nothing
  more to reach Newton steps, stability certificates, refinement and implicit derivatives;
  the dense and blocked maps override it with their closed forms.

All are traceable and differentiable (forward and reverse, to any order), so
the implicit derivatives of :mod:`vaefp_jax.implicit` use the same map as the
forward solve. :mod:`vaefp_jax.equations` is the reference every map is
tested against (tests/test_engine.py runs every registered map against it; tests/test_blocked_map.py
and tests/test_pallas_map.py test the blocked and Pallas maps pass by pass).
"""

from __future__ import annotations

from typing import ClassVar

import jax

from vaefp_jax.equations import MapValue, validated
from vaefp_jax.operators import linearized

__all__ = ["StepMap"]


class StepMap:
    """Base class of the step maps (see the module docstring)."""

    factored: ClassVar[bool] = False
    """Whether :meth:`jacobian` carries the Woodbury factors (a static fact: solvers are chosen
    before tracing)."""

    def evaluate(self, psi, x, beta, log_prior) -> MapValue:
        raise NotImplementedError

    def __call__(self, psi, x, beta, log_prior) -> jax.Array:
        """F(ψ), (K, d), with the inputs validated (``evaluate`` is the unchecked, traced form)."""
        psi, x, beta, log_prior = validated(psi, x, beta, log_prior)
        self.check(x.shape[0], psi.shape[0], x.shape[1])
        return self.evaluate(psi, x, beta, log_prior).psi

    def order_parameter(self, psi, x, beta, log_prior) -> jax.Array:
        raise NotImplementedError

    def init_state(self, num_points: int, num_tiles: int, dtype):
        """The state of a first ``evaluate_warm`` (a pytree of arrays; ``()``: none)."""
        return ()

    def evaluate_warm(self, psi, x, beta, log_prior, state):
        """(MapValue, state'): ``evaluate`` at ψ, helped by ``state`` from the previous
        evaluation of the same problem (the value does not depend on it, to rounding)."""
        return self.evaluate(psi, x, beta, log_prior), state

    def jacobian(self, psi, x, beta, log_prior):
        """∂F/∂ψ at ψ (K, d): products by JVPs and VJPs of :meth:`evaluate` (memory of one
        evaluation each), tile masses s_b = Σ_i q_ib = π_b Σ_i m_ib from the value at ψ (XLA drops
        that evaluation where no consumer reads them)."""
        mass = self.evaluate(psi, x, beta, log_prior).tile_mass(log_prior) * x.shape[0]
        return linearized(lambda p: self.evaluate(p, x, beta, log_prior).psi, psi, mass)

    def lane_shape(self, num_points: int, num_tiles: int) -> tuple[int, int]:
        return num_points, num_tiles

    def check(self, num_points: int, num_tiles: int, dim: int) -> None:
        """Raise ``ValueError`` when this map cannot evaluate such a problem."""
