"""Figure 1 of the paper: the latent tiling of a VAE with a RealNVP encoder on 40 MNIST digits.

Three panels over the 2-D latent space:

* left: 100 posterior samples z ~ q(·|x_i) per exemplar, coloured by exemplar id,
  with the digit label written at each cluster's mean;
* centre: MSE(z) = (1/D)‖g(z) − x_nn(z)‖², where x_nn(z) is the training image
  nearest to the decoded g(z);
* right: ‖∇_z MSE(z)‖ (``jax.grad``; the nearest neighbour is piecewise
  constant in z, so the gradient is that of the selected term).

Per Prop. 3 the error is flat inside a tile and the gradient lights up on the
tile boundaries, where the decoder blends neighbouring exemplars.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = ["ReconstructionMaps", "Figure1Data", "posterior_samples", "reconstruction_maps",
           "figure1_data", "plot_figure1", "save_figure1", "exemplar_colours"]


@dataclasses.dataclass(frozen=True)
class ReconstructionMaps:
    """Maps over a square grid of z: axis (G,), mse, grad_norm, nearest (G, G) indexed [row=z₂, col=z₁]."""

    axis: np.ndarray
    mse: np.ndarray
    grad_norm: np.ndarray
    nearest: np.ndarray

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (float(self.axis[0]), float(self.axis[-1]), float(self.axis[0]), float(self.axis[-1]))


@dataclasses.dataclass(frozen=True)
class Figure1Data:
    """Everything drawn: samples (n, S, 2), labels (n,), maps."""

    samples: np.ndarray
    labels: np.ndarray
    maps: ReconstructionMaps


def posterior_samples(sample: Callable, x: np.ndarray, key: jax.Array, num: int = 100) -> np.ndarray:
    """z ~ q(·|x_i), ``num`` per exemplar: x (n, D) → (n, num, d_z). sample(key, x (D,), num) → (num, d_z)."""
    keys = jax.random.split(key, x.shape[0])
    return np.stack([np.asarray(sample(k, jnp.asarray(xi), num)) for k, xi in zip(keys, x)])


def reconstruction_maps(decode: Callable[[jax.Array], jax.Array], x: np.ndarray, extent: float = 3.0,
                        resolution: int = 200, chunk: int = 4096) -> ReconstructionMaps:
    """MSE to the nearest exemplar and its gradient norm on a resolution² grid over [−extent, extent]².

    decode: a JAX-traceable g, z (m, 2) → (m, D). x: (n, D) exemplars."""
    if resolution < 2 or extent <= 0:
        raise ValueError(f"need resolution ≥ 2 and extent > 0, got {resolution}, {extent}")
    xs = jnp.asarray(x, jnp.float32)

    def mse_nn(z):  # z (2,) → (MSE to the nearest exemplar, its index)
        errors = jnp.mean((decode(z[None, :])[0] - xs) ** 2, axis=-1)
        i = jnp.argmin(errors)
        return errors[i], i

    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(mse_nn, has_aux=True)))
    axis = np.linspace(-extent, extent, resolution, dtype=np.float32)
    z1, z2 = np.meshgrid(axis, axis)  # row index = z₂
    grid = np.stack([z1.ravel(), z2.ravel()], axis=-1)
    mse, grad, nearest = [], [], []
    for start in range(0, grid.shape[0], chunk):
        block = grid[start:start + chunk]
        pad = chunk - block.shape[0]
        (m, i), g = value_and_grad(jnp.asarray(np.pad(block, ((0, pad), (0, 0)))))
        keep = slice(0, block.shape[0])
        mse.append(np.asarray(m)[keep])
        nearest.append(np.asarray(i)[keep])
        grad.append(np.linalg.norm(np.asarray(g), axis=-1)[keep])
    shape = (resolution, resolution)
    return ReconstructionMaps(axis=axis, mse=np.concatenate(mse).reshape(shape),
                              grad_norm=np.concatenate(grad).reshape(shape),
                              nearest=np.concatenate(nearest).reshape(shape))


def figure1_data(trained, key: jax.Array | None = None, num_samples: int = 100, extent: float = 3.0,
                 resolution: int = 200) -> Figure1Data:
    """Samples and maps of a :class:`~vaefp_jax.vae.trained.TrainedVAE` (2-D latent only)."""
    if trained.config.latent_dim != 2:
        raise ValueError(f"Figure 1 needs a 2-D latent space, got latent_dim={trained.config.latent_dim}")
    key = jax.random.key(trained.config.seed + 3) if key is None else key
    x = np.asarray(trained.exemplars.images)
    return Figure1Data(samples=posterior_samples(trained.sample, x, key, num_samples),
                       labels=np.asarray(trained.exemplars.labels),
                       maps=reconstruction_maps(trained.decode, x, extent, resolution))


def exemplar_colours(n: int) -> np.ndarray:
    """n distinct RGBA colours (tab20, tab20b, tab20c, then cycling): (n, 4)."""
    base = np.concatenate([colormaps[c](np.arange(20)) for c in ("tab20", "tab20b", "tab20c")])
    return base[np.arange(n) % len(base)]


def plot_figure1(data: Figure1Data, title: str | None = None) -> Figure:
    """The three panels as a matplotlib Figure (no pyplot state involved)."""
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    ax_s, ax_m, ax_g = fig.subplots(1, 3)
    n = data.samples.shape[0]
    colours = exemplar_colours(n)
    lim = data.maps.extent
    for i in range(n):
        ax_s.scatter(data.samples[i, :, 0], data.samples[i, :, 1], s=4, color=colours[i], linewidths=0)
    outline = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for i in range(n):
        cx, cy = np.mean(data.samples[i], axis=0)
        ax_s.text(cx, cy, str(int(data.labels[i])), ha="center", va="center", fontsize=11,
                  fontweight="bold", path_effects=outline)
    ax_s.set(xlim=lim[:2], ylim=lim[2:], aspect="equal", xlabel="$z_1$", ylabel="$z_2$",
             title=f"posterior samples, {data.samples.shape[1]} per exemplar")

    im = ax_m.imshow(data.maps.mse, origin="lower", extent=lim, cmap="viridis")
    ax_m.set(xlabel="$z_1$", ylabel="$z_2$", title="MSE to nearest training image")
    fig.colorbar(im, ax=ax_m, shrink=0.85)

    g = data.maps.grad_norm
    floor = max(float(np.percentile(g, 1)), 1e-8)
    im = ax_g.imshow(np.maximum(g, floor), origin="lower", extent=lim, cmap="magma",
                     norm=LogNorm(vmin=floor, vmax=max(float(g.max()), floor * 10)))
    ax_g.set(xlabel="$z_1$", ylabel="$z_2$", title=r"$\|\nabla_z\,$MSE$\|$")
    fig.colorbar(im, ax=ax_g, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def save_figure1(data: Figure1Data, path: str | os.PathLike, title: str | None = None, dpi: int = 100) -> pathlib.Path:
    """Draw and save as PNG; returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_figure1(data, title).savefig(path, dpi=dpi)
    return path
