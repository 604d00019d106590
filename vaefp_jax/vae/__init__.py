"""The VAE of the paper's Figure 1: RealNVP encoder, MLP decoder, tiling metrics.

    from vaefp_jax.vae import VAEConfig, train_vae, evaluate_tiling
    trained = train_vae(VAEConfig(), out="runs/vae")   # → TrainedVAE
    print(evaluate_tiling(trained).summary())

Submodules (one concept each): ``config`` (VAEConfig), ``nets`` (MLP), ``flow``
(conditional RealNVP q(z|x)), ``model`` (decoder, VAE), ``objective`` (β-ELBO),
``optim`` (Adam schedule), ``checkpoint`` (run directories, orbax),
``trained`` (TrainedVAE), ``train`` (train_vae), ``tiling`` (metrics for any
encoder), ``figure1`` (the three panels), ``cli`` (``vaefp train-vae``).

Attributes are imported lazily so that ``vaefp`` starts fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VAEConfig": "config",
    "SMALL_CONFIG": "config",
    "ConditionalRealNVP": "flow",
    "AffineCoupling": "flow",
    "VAE": "model",
    "Decoder": "model",
    "build_vae": "model",
    "beta_elbo": "objective",
    "gaussian_log_likelihood": "objective",
    "TrainedVAE": "trained",
    "train_vae": "train",
    "TilingMetrics": "tiling",
    "tiling_metrics": "tiling",
    "evaluate_tiling": "tiling",
    "figure1_data": "figure1",
    "save_figure1": "figure1",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vaefp_jax.vae.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vaefp_jax.vae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
