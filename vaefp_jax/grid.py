"""Tile bases of the latent space (Proposition 4, Appendix A).

The posterior and the decoder of a high-capacity VAE are written in a basis of
indicator functions φ_a(z) ∈ {0, 1} with disjoint supports (the *tiles*). A
:class:`LatentGrid` holds what the fixed-point equations need of that basis:

* ``z``          (K, d_z) a representative point of each tile (its centre, or for
                 a Normal prior the prior-conditional mean of the tile);
* ``log_prior``  (K,)     log π_a, with π_a = E_π[φ_a(z)] the prior mass of tile a;
* ``lower``, ``upper`` (K, d_z) the tile's bounds (``±inf`` for the outer tiles of
                 a Normal prior, which absorb the tails);
* ``width``      the side of an interior tile.

Tiles are laid out as a k × k (× …) product grid, flattened in C order with the
*last* latent coordinate varying fastest.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vaefp_jax import _validate

__all__ = ["LatentGrid", "normal_cdf", "normal_pdf"]


def normal_cdf(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(t, dtype=np.float64) / math.sqrt(2.0)))


def normal_pdf(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    return np.where(np.isfinite(t), out, 0.0)


def _product(values_1d: list[np.ndarray]) -> np.ndarray:
    """(k**dim, dim) array of all combinations, last coordinate fastest."""
    mesh = np.meshgrid(*values_1d, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class LatentGrid:
    """A product grid of tiles in a ``dim``-dimensional latent space.

    Build one with :meth:`uniform` (the paper's Appendix A setting) or
    :meth:`gaussian` (tiles of the N(0, I) prior of eq. (1)). Arrays are NumPy
    float64; the solver casts them to its working dtype.
    """

    z: np.ndarray
    log_prior: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    width: float
    k: int
    kind: str

    @property
    def num_tiles(self) -> int:
        """K, the number of tiles."""
        return int(self.z.shape[0])

    @property
    def dim(self) -> int:
        """d_z, the latent dimension."""
        return int(self.z.shape[1])

    @property
    def prior(self) -> np.ndarray:
        """π_a, shape (K,)."""
        return np.exp(self.log_prior)

    @classmethod
    def uniform(cls, k: int, low: float = -0.5, high: float = 0.5, dim: int = 2) -> "LatentGrid":
        """k**dim equal square tiles on [low, high]**dim under a uniform prior.

        Appendix A: a 32 × 32 grid on [−½, ½]² with π(z) = 1, so π_a = 1/K.
        """
        k, dim = _check_k_dim(k, dim)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise ValueError(f"need finite low < high, got low={low}, high={high}")
        edges = np.linspace(low, high, k + 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        z = _product([centres] * dim)
        lower = _product([edges[:-1]] * dim)
        upper = _product([edges[1:]] * dim)
        K = k**dim
        log_prior = np.full((K,), -math.log(K))
        return cls(z=z, log_prior=log_prior, lower=lower, upper=upper,
                   width=float((high - low) / k), k=k, kind="uniform")

    @classmethod
    def gaussian(cls, k: int, limit: float = 3.0, dim: int = 2) -> "LatentGrid":
        """k**dim tiles of the standard-Normal prior.

        The interior edges are equally spaced on [−limit, limit]; the outermost
        tiles of each row extend to ±∞ so that the masses, products of
        one-dimensional Normal masses Φ(b) − Φ(a), sum to one exactly. Each
        tile's representative point ``z`` is its prior-conditional mean,
        (φ(a) − φ(b)) / (Φ(b) − Φ(a)) per coordinate, finite for the tail tiles.
        """
        k, dim = _check_k_dim(k, dim)
        if not (np.isfinite(limit) and limit > 0):
            raise ValueError(f"need a finite limit > 0, got {limit}")
        edges = np.linspace(-limit, limit, k + 1)
        edges[0], edges[-1] = -np.inf, np.inf
        a, b = edges[:-1], edges[1:]
        mass_1d = normal_cdf(b) - normal_cdf(a)
        if np.any(mass_1d <= 0):
            raise ValueError("a tile has zero prior mass in float64: use a smaller limit or k")
        mean_1d = (normal_pdf(a) - normal_pdf(b)) / mass_1d
        log_mass_1d = np.log(mass_1d)
        z = _product([mean_1d] * dim)
        log_prior = _product([log_mass_1d] * dim).sum(axis=1)
        # Normalise away the rounding of the erf differences (|Σπ − 1| ~ 1e-16).
        log_prior = log_prior - np.log(np.exp(log_prior).sum())
        lower = _product([a] * dim)
        upper = _product([b] * dim)
        return cls(z=z, log_prior=log_prior, lower=lower, upper=upper,
                   width=float(2 * limit / k), k=k, kind="gaussian")


def _check_k_dim(k, dim) -> tuple[int, int]:
    _validate.check_int("k", k)
    _validate.check_int("dim", dim)
    if int(k) ** int(dim) > 2**22:
        raise ValueError(f"k**dim = {int(k) ** int(dim)} tiles is too many")
    return int(k), int(dim)
