"""A plain multilayer perceptron in Flax NNX, the building block of encoder and decoder."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
from flax import nnx

__all__ = ["MLP"]


class MLP(nnx.Module):
    """x (..., sizes[0]) → (..., sizes[-1]); ``activation`` between layers, none after the last.

    zero_last: initialise the last layer's kernel and bias to 0 (the output starts at 0).
    """

    def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs,
                 activation: Callable[[jax.Array], jax.Array] = nnx.silu, zero_last: bool = False):
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
        zeros = nnx.initializers.zeros_init()
        layers = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = k == len(sizes) - 2
            if last and zero_last:
                layers.append(nnx.Linear(a, b, kernel_init=zeros, bias_init=zeros, rngs=rngs))
            else:
                layers.append(nnx.Linear(a, b, rngs=rngs))
        self.layers = nnx.List(layers)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)
