"""The β-ELBO of the paper's Eq. (1) with a Gaussian likelihood of fixed global σ.

    F = E_ρ(x)[ E_q(z|x)[ln p(x|z)] − β KL(q(z|x) ‖ π) ],   π = N(0, I),
    ln p(x|z) = −‖x − g(z)‖² / (2σ²) − (D/2) ln(2πσ²).

Both expectations are Monte Carlo averages over ``num_samples`` draws z ~ q(·|x)
per image; the KL uses the encoder's exact log q(z|x) (single-sample estimator
log q − log π, unbiased).

Why σ is fixed: with σ learned jointly, the optimum sends σ → 0 (Prop. 2 (ii);
the ELBO of a Gaussian VAE is then unbounded, Mattei & Frellsen 2018), the
problem becomes ill-posed and the tiling does not form. With σ fixed, the
reconstruction term separates exemplars at the scale 2βσ²: pairs of images with
‖x_i − x_j‖² ≫ 2βσ² get their own tiles. On MNIST pixels in [0, 1], σ = 1 works
(nearest-neighbour squared distances between the 40 exemplars: 9.5 to 93). If
βσ² exceeds the top eigenvalue of the data covariance (≈ 6.2 for the packaged
40 images), the posterior collapses onto the prior (the paper's first phase
transition) and there is no tiling at all.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from vaefp_jax.vae.flow import standard_normal_log_prob
from vaefp_jax.vae.model import VAE

__all__ = ["ELBOTerms", "gaussian_log_likelihood", "beta_elbo"]


@struct.dataclass
class ELBOTerms:
    """Per-dataset averages (scalars): objective = reconstruction − β·kl, elbo = reconstruction − kl."""

    objective: jax.Array
    elbo: jax.Array
    reconstruction: jax.Array
    kl: jax.Array


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, sigma: float) -> jax.Array:
    """ln N(x; mean, σ²I) summed over the last axis; x, mean broadcastable (..., D) → (...)."""
    d = x.shape[-1]
    return (-0.5 * jnp.sum((x - mean) ** 2, axis=-1) / sigma**2
            - d * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi)))


def beta_elbo(model: VAE, x: jax.Array, key: jax.Array, *, sigma: float, beta: float,
              num_samples: int) -> ELBOTerms:
    """x (n, D): the training set (full batch). Returns dataset-averaged :class:`ELBOTerms`."""
    z, log_q = model.encoder.sample_and_log_prob(key, x, num_samples)  # (n, S, d), (n, S)
    recon = gaussian_log_likelihood(x[:, None, :], model.decoder(z), sigma)  # (n, S)
    kl = log_q - standard_normal_log_prob(z)
    recon_mean, kl_mean = jnp.mean(recon), jnp.mean(kl)
    return ELBOTerms(objective=recon_mean - beta * kl_mean, elbo=recon_mean - kl_mean,
                     reconstruction=recon_mean, kl=kl_mean)
