"""The optimiser: Adam with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import optax

from vaefp_jax.vae.config import VAEConfig

__all__ = ["learning_rate_schedule", "make_optimizer"]


def learning_rate_schedule(config: VAEConfig) -> optax.Schedule:
    """0 → learning_rate over warmup_steps, then cosine decay to end_learning_rate at ``steps``."""
    warmup = min(config.warmup_steps, config.steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=config.steps, end_value=config.end_learning_rate)


def make_optimizer(config: VAEConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.clip_norm),
                       optax.adam(learning_rate_schedule(config)))
