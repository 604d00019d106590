"""Argument types and exit codes of the ``vaefp`` commands (no JAX imported)."""

from __future__ import annotations

import argparse
import math
from typing import Any

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_NOT_CONVERGED", "OneLineParser", "example",
           "positive_float", "positive_int"]

EXIT_BAD_INPUT = 2       # argparse's code for a usage error; also every one-line input error
EXIT_NOT_CONVERGED = 3   # --strict, and some β did not converge
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT), as shells report it


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (what was wrong, and
    where to read more) with exit code 2, instead of argparse's usage block."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def example(action: argparse.Action, *valid: str, invalid: str | None = None, needs: str = "") -> argparse.Action:
    """Attach example values to an option whose type and default do not say what to try:
    ``valid``, values it accepts on a tiny problem; ``invalid``, one it refuses; ``needs``,
    the other options it goes with (e.g. ``"--data {csv}"``). The test generated from the
    parsers (tests/test_cli_options.py) runs every option with them; values may name that
    test's files (``{csv}``, ``{npz}``, ``{tmp}``, …)."""
    extended: Any = action   # argparse.Action declares none of these attributes: they are ours
    extended.valid_examples = list(valid)
    extended.invalid_example = invalid
    extended.needs = needs
    return action


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
