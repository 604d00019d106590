"""The strategies the command line offers, declared once: each one's name, what builds it, its
help, and which command-line overrides set which of its fields.

``--map`` (``vaefp sweep``, ``vaefp phase --model grid``) chooses from :data:`STEP_MAPS` and
``--protocol`` from :data:`PROTOCOLS`; their help and choices are generated from these tables
(:func:`add_choice`) and the objects built by :func:`build`, which also refuses an override the
chosen strategy has no field for. A new strategy is one entry here. Nothing in this module
imports JAX (``vaefp --help`` must not): a strategy names its class or factory as
``"module:attribute"``, imported only when it is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable

from vaefp_jax.cli_types import example, positive_float, positive_int

__all__ = ["Strategy", "STEP_MAPS", "PROTOCOLS", "OVERRIDES", "add_choice", "add_overrides", "build"]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """``name`` on the command line; ``target``, ``"module:attribute"`` of the class or factory
    called with no arguments (None: the library's default, left to it); ``help``, one phrase;
    ``fields``, the (override option's dest, the object's field) pairs it takes."""

    name: str
    target: str | None
    help: str
    fields: tuple[tuple[str, str], ...] = ()

    def make(self):
        """The object of ``target`` (None for the library's default)."""
        if self.target is None:
            return None
        module, _, attribute = self.target.partition(":")
        obj = importlib.import_module(module)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj()


STEP_MAPS: dict[str, Strategy] = {s.name: s for s in (
    Strategy("auto", None, "dense, or on CPU blocked when its (n, K) arrays would take over an eighth of the RAM"),
    Strategy("dense", "vaefp_jax.maps:DenseMap", "DenseMap, the (K, n) logits at once; its Jacobian in closed form"),
    Strategy("blocked", "vaefp_jax.maps:BlockedMap",
             "BlockedMap, 1024 × 1024 blocks of the n × K logits; its Jacobian by JVPs, never a (K, n) array"),
    Strategy("pallas", "vaefp_jax.maps:PallasMap", "PallasMap, fused Pallas kernels (GPU, d ≤ 8)"),
)}
"""``--map``: how F(ψ) of eq. (14)–(15) and its Jacobian are computed."""

_DAMPED_FIELDS = (("damping", "damping"), ("tol", "tol"), ("max_steps", "max_steps"))
PROTOCOLS: dict[str, Strategy] = {s.name: s for s in (
    Strategy("paper", "vaefp_jax.iterations:Damped.paper", "Appendix A (α = 0.9 smoothing, tol 1e-3, 400 steps)",
             _DAMPED_FIELDS),
    Strategy("tight", "vaefp_jax.iterations:Damped.tight", "undamped, tol ~ precision", _DAMPED_FIELDS),
    Strategy("accelerated", "vaefp_jax.iterations:Accelerated",
             "extrapolation, safeguarded Newton and a stability check (fast near β_c)",
             (("tol", "tol"), ("max_steps", "fallback_steps"))),
)}
"""``--protocol``: the iteration."""

OVERRIDES: dict[str, tuple[Callable, str, tuple[str, ...], str | None]] = {
    "damping": (float, "weight of the previous iterate, in [0, 1)", ("0.5",), "1"),
    "tol": (positive_float, "tolerance on ‖ψ^{t+1} − ψ^t‖_F", ("1e-4",), None),
    "max_steps": (positive_int, "iteration cap", ("50",), None),
}
"""The override options: dest → (argparse type, help, values to try, a value refused); each
strategy says which it takes (``fields``)."""


def add_choice(group, option: str, table: dict[str, Strategy], default: str, names=None,
               what: str = "") -> argparse.Action:
    """``option`` choosing one of ``table`` (or of its ``names``), with the help composed from
    the entries'."""
    names = list(table) if names is None else list(names)
    helps = "; ".join(f"{n}: {table[n].help}" for n in names)
    return group.add_argument(option, choices=names, default=default, help=f"{what}{helps}")


def add_overrides(group, table: dict[str, Strategy], names, option: str) -> None:
    """One ``--dest`` option per override that some strategy of ``names`` takes; its help says
    which field of which strategy it sets."""
    for dest, (kind, text, valid, invalid) in OVERRIDES.items():
        takers = [(n, dict(table[n].fields)[dest]) for n in names if dest in dict(table[n].fields)]
        if not takers:
            continue
        where = ", ".join(f"{option} {n}: {field}" for n, field in takers)
        action = group.add_argument(f"--{dest.replace('_', '-')}", type=kind, help=f"override: {text} ({where})")
        example(action, *valid, invalid=invalid, needs=f"{option} {takers[0][0]}" if len(takers) < len(names) else "")


def build(table: dict[str, Strategy], name: str, args, option: str):
    """The strategy ``name`` of ``table`` with the overrides given in ``args`` set; a one-line
    ``ValueError`` for an override it has no field for, or a value its class refuses."""
    strategy = table[name]
    fields = dict(strategy.fields)
    for dest in {dest for s in table.values() for dest, _ in s.fields}:   # the overrides of this table
        if getattr(args, dest, None) is not None and dest not in fields:
            takers = [n for n, s in table.items() if dest in dict(s.fields)]
            raise ValueError(f"--{dest.replace('_', '-')} applies to {option} {' or '.join(takers)}, not to {name}")
    obj = strategy.make()
    for dest, field in strategy.fields:
        value = getattr(args, dest, None)
        if value is not None:
            try:
                obj = dataclasses.replace(obj, **{field: value})
            except ValueError as e:
                raise ValueError(f"--{dest.replace('_', '-')} {value}: {e}") from None
    return obj
