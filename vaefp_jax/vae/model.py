"""The Figure 1 VAE in Flax NNX: conditional RealNVP encoder q(z|x) and MLP decoder g(z).

The decoder is "high capacity" in the paper's sense: a wide MLP that can
represent the piecewise-constant optimum g(z) = Σ_i 1[z ∈ Ω_i] x_i of Prop. 2
closely enough for the tiling to form. Its output is

* ``sigmoid`` (default): g(z) ∈ (0, 1)^D, matching the paper's Eq. (3), where the
  optimal decoder is a convex combination of training images, which lie in [0, 1]^D;
* ``linear``: unconstrained g(z) ∈ R^D.

The likelihood p(x|z) = N(x; g(z), σ²I) with a fixed σ lives in
:mod:`vaefp_jax.vae.objective`.
"""

from __future__ import annotations

import jax
from flax import nnx

from vaefp_jax.vae.config import VAEConfig
from vaefp_jax.vae.flow import ConditionalRealNVP
from vaefp_jax.vae.nets import MLP

__all__ = ["Decoder", "VAE", "build_vae"]


class Decoder(nnx.Module):
    """g: z (..., d_z) → (..., D)."""

    def __init__(self, latent_dim: int, data_dim: int, hidden: int, depth: int, output: str,
                 *, rngs: nnx.Rngs):
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"decoder output must be 'sigmoid' or 'linear', got {output!r}")
        self.output = output
        self.net = MLP([latent_dim] + [hidden] * depth + [data_dim], rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        out = self.net(z)
        return nnx.sigmoid(out) if self.output == "sigmoid" else out


class VAE(nnx.Module):
    """Encoder q(z|x) (a :class:`ConditionalRealNVP`) and decoder g(z) (a :class:`Decoder`)."""

    def __init__(self, config: VAEConfig, data_dim: int, *, rngs: nnx.Rngs):
        self.encoder = ConditionalRealNVP(
            data_dim, config.latent_dim, config.encoder_hidden, config.encoder_depth,
            config.embedding_dim, config.num_couplings, config.coupling_hidden,
            config.coupling_depth, config.log_scale_bound, rngs=rngs)
        self.decoder = Decoder(config.latent_dim, data_dim, config.decoder_hidden,
                               config.decoder_depth, config.decoder_output, rngs=rngs)


def build_vae(config: VAEConfig, data_dim: int, seed: int | None = None) -> VAE:
    """A freshly initialised VAE; parameters from ``seed`` (default ``config.seed``)."""
    if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
        raise ValueError(f"data_dim must be a positive integer, got {data_dim!r}")
    return VAE(config, data_dim, rngs=nnx.Rngs(config.seed if seed is None else seed))
