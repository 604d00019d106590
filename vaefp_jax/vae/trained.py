"""A trained VAE as an object: log q(z|x), sampling, decoding, checkpoint loading.

:class:`TrainedVAE` wraps the NNX model split once into (graphdef, params) and
evaluates jit-compiled pure functions of them, so calls are fast and the object
works with :func:`vaefp_jax.vae.tiling.tiling_metrics` and the Figure 1 code.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vaefp_jax import _validate
from vaefp_jax.mnist import Exemplars
from vaefp_jax.vae import checkpoint as ckpt
from vaefp_jax.vae.config import VAEConfig
from vaefp_jax.vae.model import VAE, build_vae
from vaefp_jax.vae.optim import make_optimizer

__all__ = ["TrainedVAE", "abstract_training_state"]


@functools.partial(jax.jit, static_argnums=0)
def _log_q(graphdef, params, z, x):
    return nnx.merge(graphdef, params).encoder.log_prob(z, x)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _sample(graphdef, params, key, x, num):
    return nnx.merge(graphdef, params).encoder.sample_and_log_prob(key, x, num)


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, params, z):
    return nnx.merge(graphdef, params).decoder(z)


def abstract_training_state(config: VAEConfig, data_dim: int) -> tuple[nnx.GraphDef, nnx.State, Any]:
    """(graphdef, abstract params nnx.State, abstract optimiser state) without allocating arrays."""
    abstract_model = nnx.eval_shape(lambda: build_vae(config, data_dim))
    graphdef, params = nnx.split(abstract_model)
    opt_state = jax.eval_shape(make_optimizer(config).init, params)
    return graphdef, params, opt_state


@dataclasses.dataclass(repr=False)
class TrainedVAE:
    """A VAE with its training data and configuration.

    graphdef, params: the NNX model split once with ``nnx.split``.
    config: the :class:`VAEConfig` it was trained with.
    exemplars: the training set (images (n, D) in [0, 1], labels, indices).
    step: optimisation steps taken.
    history: rows [step, ELBO, KL] logged during training.
    run_dir: where its checkpoints live (None if never saved).
    """

    graphdef: nnx.GraphDef
    params: nnx.State
    config: VAEConfig
    exemplars: Exemplars
    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    run_dir: pathlib.Path | None = None

    @property
    def x(self) -> jax.Array:
        """The training images, float32 (n, D)."""
        return jnp.asarray(self.exemplars.images)

    @property
    def model(self) -> VAE:
        """A stateful NNX view of the model (a fresh merge; edits do not propagate back)."""
        return nnx.merge(self.graphdef, self.params, copy=True)

    def log_q(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """Exact log q(z|x) by the inverse flow: z (m, d_z), x (D,) → (m,).

        Also z (n, m, d_z) with x (n, D) → (n, m)."""
        z, x = jnp.asarray(z, jnp.float32), jnp.asarray(x, jnp.float32)
        if z.ndim < 2 or z.shape[-1] != self.config.latent_dim:
            raise ValueError(f"z must have shape (m, {self.config.latent_dim}), got {z.shape}")
        if x.shape[-1] != self.exemplars.images.shape[-1] or x.ndim != z.ndim - 1:
            raise ValueError(f"x must have shape ({self.exemplars.images.shape[-1]},) for z of shape (m, d_z), "
                             f"got {x.shape}")
        return _log_q(self.graphdef, self.params, z, x)

    def sample(self, key: jax.Array, x: jax.Array, num: int) -> jax.Array:
        """z ~ q(·|x): x (D,) → (num, d_z); x (n, D) → (n, num, d_z)."""
        return self.sample_and_log_q(key, x, num)[0]

    def sample_and_log_q(self, key: jax.Array, x: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        """(z, log q(z|x)) by the forward flow: x (..., D) → (..., num, d_z), (..., num)."""
        _validate.check_int("num", num)
        x = jnp.asarray(x, jnp.float32)
        if x.shape[-1] != self.exemplars.images.shape[-1]:
            raise ValueError(f"x must have last axis {self.exemplars.images.shape[-1]}, got shape {x.shape}")
        return _sample(self.graphdef, self.params, key, x, int(num))

    def decode(self, z: jax.Array) -> jax.Array:
        """g(z): (..., d_z) → (..., D)."""
        z = jnp.asarray(z, jnp.float32)
        if z.shape[-1] != self.config.latent_dim:
            raise ValueError(f"z must have last axis {self.config.latent_dim}, got shape {z.shape}")
        return _decode(self.graphdef, self.params, z)

    def __repr__(self) -> str:
        """One line: the model's size and the run, not its parameters."""
        num_params = sum(int(a.size) for a in jax.tree.leaves(self.params))
        n, D = self.exemplars.images.shape
        elbo = f", ELBO {self.history[-1][1]:.4g}" if self.history else ""
        return (f"TrainedVAE(d_z={self.config.latent_dim}, {num_params:,} parameters, trained on {n} × {D} at "
                f"β={self.config.beta:g}, step {self.step}{elbo}, "
                f"run_dir={str(self.run_dir) if self.run_dir else None})")

    @classmethod
    def load(cls, path: str | os.PathLike, step: int | None = None) -> "TrainedVAE":
        """Load a run directory written by :func:`vaefp_jax.vae.train.train_vae` (or its
        ``checkpoints/`` folder, or one ``checkpoints/<step>`` folder); ``step``
        defaults to the folder's step or the latest checkpoint."""
        out = ckpt.run_dir_of(path)
        p = pathlib.Path(path).absolute()
        if step is None and p.parent.name == ckpt.CHECKPOINT_DIR and p.name.isdigit():
            step = int(p.name)
        config = ckpt.load_config(out)
        exemplars = ckpt.load_run_exemplars(out)
        graphdef, abstract_params, abstract_opt = abstract_training_state(config, exemplars.images.shape[1])
        step, params, _ = ckpt.restore_checkpoint(out, abstract_params, abstract_opt, step)
        history = [row for row in ckpt.load_history(out) if row[0] <= step]
        return cls(graphdef=graphdef, params=params, config=config, exemplars=exemplars, step=step,
                   history=history, run_dir=out)

