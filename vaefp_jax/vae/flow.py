"""Conditional RealNVP encoder q(z|x) (Dinh et al. 2017), as in the paper's Figure 1.

An MLP of x gives the mean μ(x) and log-scale s(x) of a base Gaussian in z and
an embedding h(x). A base draw z₀ = μ + e^s ⊙ ε, ε ~ N(0, I), then passes
through K affine coupling layers f_k, each conditioned on h(x) and alternating
which half of the coordinates it transforms:

    z_b ← z_b ⊙ exp(c·tanh(a_k(z_a, h))) + t_k(z_a, h),   z_a unchanged.

The last layer of every coupling network is zero-initialised, so the flow starts
as the identity and q(z|x) starts as the base Gaussian. The density is exact:

    log q(z|x) = log N(z₀; μ, e^{2s}) − Σ_k log|det ∂f_k/∂z|,

computed in the forward direction for the encoder's own samples
(:meth:`ConditionalRealNVP.sample_and_log_prob`) and by inverting the couplings
for an arbitrary z (:meth:`ConditionalRealNVP.log_prob`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx, struct

from vaefp_jax.vae.nets import MLP

__all__ = ["AffineCoupling", "ConditionalRealNVP", "Conditioning", "BASE_LOG_SCALE_BOUND",
           "standard_normal_log_prob"]

BASE_LOG_SCALE_BOUND = 6.0  # base scales stay in [e^-6, e^6]: no overflow, never binding in practice
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def standard_normal_log_prob(eps: jax.Array) -> jax.Array:
    """log N(eps; 0, I) summed over the last axis: (..., d) → (...)."""
    return -0.5 * jnp.sum(eps**2, axis=-1) - eps.shape[-1] * _HALF_LOG_2PI


@struct.dataclass
class Conditioning:
    """What the encoder computes from x once: mean, log_scale (..., d_z) and embedding (..., E)."""

    mean: jax.Array
    log_scale: jax.Array
    embedding: jax.Array

    def expand(self, axis: int = -2) -> "Conditioning":
        """Insert a broadcast axis (for a batch of z per x)."""
        return Conditioning(jnp.expand_dims(self.mean, axis), jnp.expand_dims(self.log_scale, axis),
                            jnp.expand_dims(self.embedding, axis))


class AffineCoupling(nnx.Module):
    """One affine coupling layer on z ∈ R^d conditioned on an embedding h.

    parity 0 transforms the first ⌈d/2⌉ coordinates given the rest; parity 1 the
    other way round. The log-scale is bounded to (−c, c) by c·tanh.
    """

    def __init__(self, latent_dim: int, context_dim: int, hidden: int, depth: int, parity: int,
                 log_scale_bound: float, *, rngs: nnx.Rngs):
        half = (latent_dim + 1) // 2
        self.transform_first = parity % 2 == 0
        self.half = half
        self.log_scale_bound = float(log_scale_bound)
        nb = half if self.transform_first else latent_dim - half
        # First layer split as W_z z_a + W_h h so that W_h h is computed once per x
        # and broadcast over all z drawn for that x.
        self.in_z = nnx.Linear(latent_dim - nb, hidden, rngs=rngs)
        self.in_h = nnx.Linear(context_dim, hidden, use_bias=False, rngs=rngs)
        self.body = MLP([hidden] * depth + [2 * nb], rngs=rngs, zero_last=True)

    def _split(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z (..., d) → (z_a conditioner, z_b transformed)."""
        lo, hi = z[..., :self.half], z[..., self.half:]
        return (hi, lo) if self.transform_first else (lo, hi)

    def _join(self, za: jax.Array, zb: jax.Array) -> jax.Array:
        parts = (zb, za) if self.transform_first else (za, zb)
        return jnp.concatenate(parts, axis=-1)

    def _shift_log_scale(self, za: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = self.body(nnx.silu(self.in_z(za) + self.in_h(h)))
        nb = out.shape[-1] // 2
        shift, raw = out[..., :nb], out[..., nb:]
        return shift, self.log_scale_bound * jnp.tanh(raw)

    def forward(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z (..., d), h (..., E) broadcastable → (f(z) (..., d), log|det ∂f/∂z| (...))."""
        za, zb = self._split(z)
        shift, log_scale = self._shift_log_scale(za, h)
        return self._join(za, zb * jnp.exp(log_scale) + shift), jnp.sum(log_scale, axis=-1)

    def inverse(self, y: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """y (..., d) → (f⁻¹(y) (..., d), log|det ∂f/∂z| at f⁻¹(y) (...)) (the forward log-det)."""
        ya, yb = self._split(y)  # z_a = y_a, so the network sees the same input both ways
        shift, log_scale = self._shift_log_scale(ya, h)
        return self._join(ya, (yb - shift) * jnp.exp(-log_scale)), jnp.sum(log_scale, axis=-1)


class ConditionalRealNVP(nnx.Module):
    """q(z|x): base Gaussian N(μ(x), diag e^{2s(x)}) pushed through K conditional affine couplings.

    Shapes: x (..., D); samples z (..., m, d_z) for m draws per x.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: int, depth: int, embedding_dim: int,
                 num_couplings: int, coupling_hidden: int, coupling_depth: int,
                 log_scale_bound: float, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.embedding_dim = embedding_dim
        self.trunk = MLP([data_dim] + [hidden] * depth + [2 * latent_dim + embedding_dim], rngs=rngs)
        self.couplings = nnx.List([
            AffineCoupling(latent_dim, embedding_dim, coupling_hidden, coupling_depth, k,
                           log_scale_bound, rngs=rngs)
            for k in range(num_couplings)
        ])

    def condition(self, x: jax.Array) -> Conditioning:
        """x (..., D) → Conditioning with mean, log_scale (..., d_z), embedding (..., E)."""
        out = self.trunk(x)
        d = self.latent_dim
        raw = out[..., d:2 * d]
        log_scale = BASE_LOG_SCALE_BOUND * jnp.tanh(raw / BASE_LOG_SCALE_BOUND)
        return Conditioning(out[..., :d], log_scale, out[..., 2 * d:])

    def flow_forward(self, z0: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Base point z₀ (..., d) → (z (..., d), Σ_k log|det| (...))."""
        log_det = jnp.zeros(z0.shape[:-1], z0.dtype)
        for layer in self.couplings:
            z0, ld = layer.forward(z0, h)
            log_det = log_det + ld
        return z0, log_det

    def flow_inverse(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z (..., d) → (z₀ (..., d), Σ_k log|det ∂f_k| (...)) (forward log-dets)."""
        log_det = jnp.zeros(z.shape[:-1], z.dtype)
        for layer in reversed(self.couplings):
            z, ld = layer.inverse(z, h)
            log_det = log_det + ld
        return z, log_det

    def base_log_prob(self, z0: jax.Array, ctx: Conditioning) -> jax.Array:
        """log N(z₀; μ, e^{2s}): (..., d) → (...)."""
        eps = (z0 - ctx.mean) * jnp.exp(-ctx.log_scale)
        return standard_normal_log_prob(eps) - jnp.sum(ctx.log_scale, axis=-1)

    def sample_and_log_prob(self, key: jax.Array, x: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        """x (..., D) → z (..., num, d_z) ~ q(·|x) and log q(z|x) (..., num), by the forward pass."""
        ctx = self.condition(x).expand()
        eps = jax.random.normal(key, x.shape[:-1] + (num, self.latent_dim), x.dtype)
        z0 = ctx.mean + jnp.exp(ctx.log_scale) * eps
        z, log_det = self.flow_forward(z0, ctx.embedding)
        return z, standard_normal_log_prob(eps) - jnp.sum(ctx.log_scale, axis=-1) - log_det

    def log_prob(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """log q(z|x) for arbitrary z, by the inverse pass.

        z (..., m, d_z), x (..., D) with matching leading axes → (..., m).
        (A single x (D,) with z (m, d_z) gives (m,).)
        """
        ctx = self.condition(x).expand()
        z0, log_det = self.flow_inverse(z, ctx.embedding)
        return self.base_log_prob(z0, ctx) - log_det
