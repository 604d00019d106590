"""A step map that exists only in the tests: eq. (14)–(15) written out in a dozen lines of
``jax.numpy``, with nothing but ``evaluate`` and ``order_parameter``.

It is the test of "a new step map is one module plus one registry line": registered in
tests/registry.py (``MAPS["toy"]``) and, for the command line, in ``vaefp_jax.cli``'s map
registry by tests/test_cli_phase.py, it must reach ``solve`` under every iteration, constraint and
schedule, ``sweep``'s u′ and u″, ``Accelerated``'s Newton steps and certificate and the
refinement of β_c, all through the default Jacobian of :class:`vaefp_jax.maps.StepMap`
(derivatives of this ``evaluate``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import vaefp_jax as vf
from vaefp_jax.equations import MapValue

HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class ToyMap(vf.StepMap):
    """Eq. (14)–(15) in log space, from the (n, K) squared distances formed by broadcasting."""

    def _log_m(self, psi, x, beta, log_prior):
        logits = -jnp.sum((x[:, None, :] - psi[None, :, :]) ** 2, axis=-1) / (2 * beta)     # (n, K)
        log_c = jax.nn.logsumexp(logits + log_prior[None, :], axis=1)                      # (n,)
        return logits - log_c[:, None], log_c

    def evaluate(self, psi, x, beta, log_prior) -> MapValue:
        log_m, log_c = self._log_m(psi, x, beta, log_prior)
        log_mass = jax.nn.logsumexp(log_m, axis=0)                                          # (K,)
        w = jnp.exp(log_m - log_mass[None, :])                                              # columns sum to 1
        return MapValue(psi=jnp.einsum("nk,nd->kd", w, x, precision=HIGHEST), log_c=log_c, log_mass=log_mass)

    def order_parameter(self, psi, x, beta, log_prior):
        log_m, _ = self._log_m(psi, x, beta, log_prior)
        q = jnp.exp(log_m + log_prior[None, :])
        return jnp.sum(q * jnp.sum((x[:, None, :] - psi[None, :, :]) ** 2, axis=-1)) / x.shape[0]
