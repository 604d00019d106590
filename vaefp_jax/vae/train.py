"""Full-batch training of the Figure 1 VAE: ``train_vae(config) -> TrainedVAE``.

Speed: the model is split once with ``nnx.split`` and the step is a pure
function of (params, opt_state, step) compiled with ``jax.jit``; ``nnx.merge``
happens only inside the traced function (free at run time). Decorating the
step with ``nnx.jit`` instead re-walks the module graph on every call, an order
of magnitude slower per step (docs/figure1.md).

Determinism: parameters come from ``config.seed``; the Monte Carlo noise of
step t is ``fold_in(key(seed + 1), t)``, so training to N, checkpointing and
resuming to 2N reproduces training to 2N directly (the learning-rate schedule
depends only on ``config.steps``).
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from vaefp_jax import _validate
from vaefp_jax.mnist import Exemplars, load_exemplars
from vaefp_jax.vae import checkpoint as ckpt
from vaefp_jax.vae.config import VAEConfig
from vaefp_jax.vae.model import build_vae
from vaefp_jax.vae.objective import ELBOTerms, beta_elbo
from vaefp_jax.vae.optim import make_optimizer
from vaefp_jax.vae.trained import TrainedVAE, abstract_training_state

__all__ = ["train_vae", "make_train_step", "TrainedVAE"]

TrainStep = Callable[[nnx.State, optax.OptState, jax.Array, jax.Array], tuple[nnx.State, optax.OptState, ELBOTerms]]


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    config: VAEConfig) -> TrainStep:
    """A jitted pure step (params, opt_state, x (n, D), step) → (params, opt_state, ELBOTerms)."""
    noise_key = jax.random.key(config.seed + 1)

    def loss_fn(params, x, key):
        terms = beta_elbo(nnx.merge(graphdef, params), x, key, sigma=config.sigma, beta=config.beta,
                          num_samples=config.num_samples)
        return -terms.objective, terms

    def step_fn(params, opt_state, x, step):
        key = jax.random.fold_in(noise_key, step)
        grads, terms = jax.grad(loss_fn, has_aux=True)(params, x, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, terms

    return jax.jit(step_fn, donate_argnums=(0, 1))


@functools.lru_cache(maxsize=8)
def _cached_train_step(graphdef: nnx.GraphDef, config: VAEConfig) -> TrainStep:
    """One compiled step per (model structure, config): repeated or resumed runs skip recompiling."""
    return make_train_step(graphdef, make_optimizer(config), config)


def _check_exemplars(exemplars: Exemplars) -> None:
    x = np.asarray(exemplars.images)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"exemplar images must have shape (n ≥ 2, D), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("exemplar images contain NaN or inf")


def _resume_state(out: pathlib.Path, config: VAEConfig, exemplars: Exemplars | None):
    saved = ckpt.load_config(out)
    if saved.replace(steps=config.steps) != config:
        diff = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items()
                if k != "steps" and getattr(config, k) != v}
        raise ValueError(f"cannot resume {out}: config differs from the saved one in {diff}")
    if saved.steps != config.steps:
        warnings.warn(f"resuming with steps={config.steps} (saved run: {saved.steps}); the learning-rate "
                      "schedule is re-stretched, so the result differs from a run of that length", stacklevel=3)
    saved_ex = ckpt.load_run_exemplars(out)
    if exemplars is not None and not np.array_equal(np.asarray(exemplars.images, np.float32), saved_ex.images):
        raise ValueError(f"cannot resume {out}: the exemplars differ from those it was trained on")
    graphdef, abstract_params, _ = abstract_training_state(config, saved_ex.images.shape[1])
    abstract_opt = jax.eval_shape(make_optimizer(config).init, abstract_params)
    step, params, opt_state = ckpt.restore_checkpoint(out, abstract_params, abstract_opt)
    history = [row for row in ckpt.load_history(out) if row[0] <= step]
    return saved_ex, graphdef, params, opt_state, step, history


def train_vae(config: VAEConfig | None = None, exemplars: Exemplars | None = None, *,
              out: str | pathlib.Path | None = None, resume: bool = False, stop_at: int | None = None,
              log_every: int = 50, progress: bool = True) -> TrainedVAE:
    """Train the VAE on ``exemplars`` (default: the packaged 40 MNIST images).

    config: hyper-parameters (default :class:`VAEConfig()`).
    out: run directory for config, exemplars, history and orbax checkpoints
        (every ``config.checkpoint_every`` steps and at the end); None keeps
        everything in memory.
    resume: continue from the latest checkpoint in ``out`` (config must match
        the saved one except possibly ``steps``).
    stop_at: stop after this many steps (≤ config.steps) with the schedule of
        the full run, as if interrupted; resume later to finish.
    log_every: steps between history rows / progress-bar updates.
    """
    config = VAEConfig() if config is None else config
    if not isinstance(config, VAEConfig):
        raise ValueError(f"config must be a VAEConfig, got {type(config).__name__}")
    end = config.steps if stop_at is None else stop_at
    if isinstance(end, bool) or int(end) != end or not 0 <= end <= config.steps:
        raise ValueError(f"stop_at must be an integer in [0, steps={config.steps}], got {stop_at!r}")
    _validate.check_int("log_every", log_every)
    out = None if out is None else pathlib.Path(out)
    if resume and out is None:
        raise ValueError("resume=True needs the run directory `out`")
    optimizer = make_optimizer(config)

    if resume and out is not None and ckpt.latest_step(out) is not None:   # resume implies out (checked above)
        exemplars, graphdef, params, opt_state, start, history = _resume_state(out, config, exemplars)
        ckpt.save_run_files(out, config, exemplars)
    else:
        if resume:
            warnings.warn(f"no checkpoint in {out}; starting from scratch", stacklevel=2)
        exemplars = load_exemplars() if exemplars is None else exemplars
        _check_exemplars(exemplars)
        graphdef, params = nnx.split(build_vae(config, int(exemplars.images.shape[1])))
        opt_state, start, history = optimizer.init(params), 0, []
        if out is not None:
            ckpt.save_run_files(out, config, exemplars)
    if start > end:
        raise ValueError(f"the checkpoint in {out} is at step {start}, past stop_at={end}")

    x = jnp.asarray(exemplars.images, jnp.float32)
    train_step = _cached_train_step(graphdef, config)
    mngr = ckpt.checkpoint_manager(out) if out is not None else None
    try:
        with tqdm(total=end, initial=start, disable=not progress, desc="train-vae", dynamic_ncols=True) as bar:
            for step in range(start, end):
                params, opt_state, terms = train_step(params, opt_state, x, jnp.asarray(step, jnp.int32))
                done = step + 1
                if done % log_every == 0 or done == end:
                    elbo, kl = float(terms.elbo), float(terms.kl)
                    if not (np.isfinite(elbo) and np.isfinite(kl)):
                        raise FloatingPointError(f"non-finite ELBO/KL at step {done}: {elbo}, {kl}")
                    history.append([done, elbo, kl])
                    bar.set_postfix(ELBO=f"{elbo:.2f}", KL=f"{kl:.3f}", refresh=False)
                    bar.update(done - bar.n)
                if mngr is not None and (done % config.checkpoint_every == 0 or done == end):
                    ckpt.save_checkpoint(mngr, done, params, opt_state)
                    assert out is not None   # mngr exists only with out
                    ckpt.save_history(out, history)
            if start == end and mngr is not None and out is not None and ckpt.latest_step(out) is None:
                ckpt.save_checkpoint(mngr, end, params, opt_state)
    finally:
        if mngr is not None:
            mngr.close()
    return TrainedVAE(graphdef=graphdef, params=params, config=config, exemplars=exemplars, step=end,
                      history=history, run_dir=out)
