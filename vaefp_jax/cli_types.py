"""Argument types and exit codes of the ``vaefp`` commands (no JAX imported)."""

from __future__ import annotations

import argparse
import math

__all__ = ["EXIT_BAD_INPUT", "EXIT_NOT_CONVERGED", "positive_float", "positive_int"]

EXIT_BAD_INPUT = 2       # argparse's code for a usage error; also every one-line input error
EXIT_NOT_CONVERGED = 3   # --strict, and some β did not converge


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return v
