"""The hyper-parameters of the Figure 1 VAE, as one JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

__all__ = ["VAEConfig", "SMALL_CONFIG", "DECODER_OUTPUTS"]

DECODER_OUTPUTS = ("sigmoid", "linear")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Everything that defines a Figure 1 training run (the data come separately).

    Model
        latent_dim: d_z (Figure 1 uses 2).
        encoder_hidden, encoder_depth: the MLP of x giving the base Gaussian's
            mean and log-scale and the embedding h(x) that conditions the couplings.
        embedding_dim: size of h(x).
        num_couplings: affine coupling layers of the conditional RealNVP.
        coupling_hidden, coupling_depth: the MLP of each coupling layer.
        log_scale_bound: c in the coupling log-scale c·tanh(·).
        decoder_hidden, decoder_depth: the decoder MLP g(z) → 784.
        decoder_output: "sigmoid" (g(z) in (0, 1)^D, like the convex combinations
            of data of the paper's Eq. (3)) or "linear".
    Objective
        sigma: the fixed global σ of p(x|z) = N(g(z), σ²I). It is NOT learned:
            by Prop. 2 (ii) a learned σ runs to 0 and the ELBO is unbounded
            (Mattei & Frellsen 2018).
        beta: β of the β-ELBO (1 = the ELBO).
        num_samples: z samples per image per step.
    Optimisation (optax Adam, full batch)
        steps, learning_rate, warmup_steps, end_learning_rate (of the cosine
        decay), clip_norm (global gradient norm), seed, checkpoint_every.
    """

    latent_dim: int = 2
    encoder_hidden: int = 256
    encoder_depth: int = 2
    embedding_dim: int = 32
    num_couplings: int = 12
    coupling_hidden: int = 128
    coupling_depth: int = 2
    log_scale_bound: float = 2.0
    decoder_hidden: int = 256
    decoder_depth: int = 3
    decoder_output: str = "sigmoid"
    sigma: float = 1.0
    beta: float = 1.0
    num_samples: int = 16
    steps: int = 8000
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    end_learning_rate: float = 1e-5
    clip_norm: float = 10.0
    seed: int = 0
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        ints = {
            "latent_dim": 2, "encoder_hidden": 1, "encoder_depth": 1, "embedding_dim": 1,
            "num_couplings": 0, "coupling_hidden": 1, "coupling_depth": 1, "decoder_hidden": 1,
            "decoder_depth": 1, "num_samples": 1, "steps": 1, "warmup_steps": 0,
            "checkpoint_every": 1,
        }
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("log_scale_bound", "sigma", "beta", "learning_rate", "clip_norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if (not isinstance(self.end_learning_rate, (int, float))
                or not 0 <= self.end_learning_rate <= self.learning_rate):
            raise ValueError(f"end_learning_rate must be in [0, learning_rate], got {self.end_learning_rate!r}")
        if self.decoder_output not in DECODER_OUTPUTS:
            raise ValueError(f"decoder_output must be one of {DECODER_OUTPUTS}, got {self.decoder_output!r}")

    def replace(self, **changes: Any) -> "VAEConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VAEConfig fields: {sorted(unknown)}")
        return cls(**d)

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "VAEConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))


#: A quick setting (≈ 20 s of training on 2 CPU cores) for notebooks, tests and
#: ``vaefp figure 1 --small``: the tiling is visible but coarser than the default's.
SMALL_CONFIG = VAEConfig(num_couplings=6, coupling_hidden=64, decoder_hidden=128, num_samples=8,
                         steps=2000, learning_rate=2e-3, warmup_steps=100, checkpoint_every=1000)
