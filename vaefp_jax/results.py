"""Saved results read back: :func:`load` dispatches a run folder on its record's kind.

It sits above the result types (:class:`~vaefp_jax.SweepRun` in :mod:`vaefp_jax.runs`,
:class:`~vaefp_jax.PhaseResult`, :class:`~vaefp_jax.SplitResult`), which themselves build on
:mod:`vaefp_jax.runs` for records and files: no module imports back.
"""

from __future__ import annotations

import os

from vaefp_jax.phase.result import PhaseResult
from vaefp_jax.phase.split_result import SplitResult
from vaefp_jax.runs import SweepRun, read_record

__all__ = ["load"]

_KINDS = {"sweep": SweepRun, "phase": PhaseResult, "phase-tree": SplitResult}


def load(folder):
    """A saved run folder as :class:`~vaefp_jax.SweepRun`, :class:`~vaefp_jax.PhaseResult` or
    :class:`~vaefp_jax.SplitResult` (by its record's kind)."""
    kind = read_record(folder).get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{os.fspath(folder)!r}: unknown kind of run {kind!r}")
    return _KINDS[kind].load(folder)
