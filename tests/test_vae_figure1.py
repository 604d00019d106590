"""Figure 1 panels: reconstruction maps against a closed form, and the saved PNG."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaefp_jax.vae.figure1 import (
    Figure1Data,
    exemplar_colours,
    figure1_data,
    posterior_samples,
    reconstruction_maps,
    save_figure1,
)

X = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)


def linear_decode(z):
    """g(z) = (z₁, z₂, 0)."""
    return jnp.concatenate([z, jnp.zeros(z.shape[:-1] + (1,))], axis=-1)


def test_reconstruction_maps_match_closed_form():
    maps = reconstruction_maps(linear_decode, X, extent=2.0, resolution=11, chunk=16)
    z1, z2 = np.meshgrid(maps.axis, maps.axis)  # rows = z₂
    nearest = (z1 > 0.5).astype(int)
    mse = ((z1 - nearest) ** 2 + z2**2) / 3
    grad = (2 / 3) * np.sqrt((z1 - nearest) ** 2 + z2**2)
    away = np.abs(z1 - 0.5) > 1e-6  # ties on the boundary
    np.testing.assert_array_equal(maps.nearest[away], nearest[away])
    np.testing.assert_allclose(maps.mse, mse, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps.grad_norm[away], grad[away], rtol=1e-5, atol=1e-6)
    assert maps.extent == (-2.0, 2.0, -2.0, 2.0)


def test_posterior_samples_shape():
    def sample(key, x, num):
        return jax.random.normal(key, (num, 2)) + x[:2]

    s = posterior_samples(sample, X, jax.random.key(0), num=7)
    assert s.shape == (2, 7, 2)
    assert abs(s[1, :, 0].mean() - s[0, :, 0].mean()) > 0.0


def test_save_figure1_png(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(40, 100, 2)) * 0.2 + rng.normal(size=(40, 1, 2))
    maps = reconstruction_maps(linear_decode, X, extent=3.0, resolution=40)
    data = Figure1Data(samples=samples, labels=np.repeat(np.arange(10), 4), maps=maps)
    path = save_figure1(data, tmp_path / "sub" / "figure1.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 500_000
    assert len({tuple(c) for c in exemplar_colours(40)}) == 40


def test_figure1_needs_2d_latent():
    fake = types.SimpleNamespace(config=types.SimpleNamespace(latent_dim=3, seed=0))
    with pytest.raises(ValueError, match="2-D"):
        figure1_data(fake)


def test_bad_grid():
    with pytest.raises(ValueError, match="resolution"):
        reconstruction_maps(linear_decode, X, resolution=1)
