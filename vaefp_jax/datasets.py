"""Seeded built-in datasets of the paper's figures, all inside roughly [−½, ½]².

Every generator takes ``n`` and ``seed`` and returns a float64 NumPy array of
shape (n, 2); the same arguments give the same points.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vaefp_jax import _validate

__all__ = [
    "COMPONENTS",
    "DATASETS",
    "gaussian_blob",
    "load_builtin",
    "mixture_of_circles",
    "mixture_of_lines",
    "three_clusters",
]


def _split(n: int, parts: int) -> list[int]:
    _validate.check_int("n", n, parts)
    base, extra = divmod(int(n), parts)
    return [base + (i < extra) for i in range(parts)]


def three_clusters(n: int = 120, seed: int = 0, std: float = 0.03) -> np.ndarray:
    """Figure 3: three isotropic Gaussian clusters at different spacings.

    Two clusters 0.2 apart on the left and a third 0.5 away from them, so the
    fixed points merge at three scales as β grows: within a cluster (β ~ std²),
    the close pair (β ~ 0.01), then everything (β ~ λ_max of the covariance)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-0.3, -0.15], [-0.1, -0.15], [0.25, 0.2]])
    pts = [c + std * rng.standard_normal((m, 2)) for c, m in zip(centres, _split(n, 3))]
    return np.concatenate(pts, axis=0)


def gaussian_blob(n: int = 200, seed: int = 0, stds=(0.2, 0.08), angle: float = np.pi / 6) -> np.ndarray:
    """An anisotropic Gaussian blob (standard deviations ``stds`` along axes rotated
    by ``angle``), centred at the origin. The first transition on cooling is at
    β_c = λ_max of its (1/n) sample covariance."""
    rng = np.random.default_rng(seed)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return (rng.standard_normal((_split(n, 1)[0], 2)) * np.asarray(stds)) @ rot.T


def mixture_of_lines(n: int = 150, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """Figure 4 (left): three noisy line segments."""
    rng = np.random.default_rng(seed)
    segments = [((-0.4, -0.3), (0.35, -0.35)), ((-0.35, 0.0), (0.1, 0.4)), ((0.15, -0.1), (0.4, 0.35))]
    pts = []
    for (a, b), m in zip(segments, _split(n, len(segments))):
        t = rng.uniform(0.0, 1.0, (m, 1))
        pts.append(np.asarray(a) + t * (np.asarray(b) - np.asarray(a)) + noise * rng.standard_normal((m, 2)))
    return np.concatenate(pts, axis=0)


def mixture_of_circles(n: int = 150, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """Figure 4 (right): three noisy circles of different radii."""
    rng = np.random.default_rng(seed)
    circles = [((-0.22, -0.18), 0.18), ((0.22, -0.15), 0.12), ((0.0, 0.25), 0.15)]
    pts = []
    for (c, r), m in zip(circles, _split(n, len(circles))):
        th = rng.uniform(0.0, 2 * np.pi, m)
        ring = np.stack([np.cos(th), np.sin(th)], axis=1) * r
        pts.append(np.asarray(c) + ring + noise * rng.standard_normal((m, 2)))
    return np.concatenate(pts, axis=0)


DATASETS: dict[str, Callable[..., np.ndarray]] = {
    "three-clusters": three_clusters,
    "blob": gaussian_blob,
    "lines": mixture_of_lines,
    "circles": mixture_of_circles,
}


# Mixture components of each dataset, in the order the generator emits their points.
COMPONENTS = {"three-clusters": 3, "blob": 1, "lines": 3, "circles": 3}


def load_builtin(name: str, n: int | None = None, seed: int = 0, with_labels: bool = False):
    """One of :data:`DATASETS` by name, with its default size unless ``n`` is given.

    With ``with_labels``, returns (x, labels): the (n,) index of the mixture
    component (cluster, line or circle) each point was drawn from."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    gen = DATASETS[name]
    x = gen(seed=seed) if n is None else gen(n=n, seed=seed)
    if not with_labels:
        return x
    parts = COMPONENTS[name]
    return x, np.repeat(np.arange(parts), _split(x.shape[0], parts))
