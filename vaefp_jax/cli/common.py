"""What the ``vaefp`` commands share: help format, data, grid and solver options, outputs, exit codes.

Nothing here imports JAX at module level: ``vaefp --help`` must answer at once.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from typing import Any

from vaefp_jax.cli.strategies import PROTOCOLS, STEP_MAPS, add_choice, add_overrides, build
from vaefp_jax.cli_types import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONVERGED,
    OneLineParser,
    example,
    positive_float,
    positive_int,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_CONVERGED",
    "Formatter",
    "OneLineParser",
    "add_data_arguments",
    "add_grid_arguments",
    "add_map_argument",
    "add_output_arguments",
    "add_solver_arguments",
    "load_data",
    "make_grid",
    "make_iteration",
    "make_step_map",
    "not_converged_exit",
    "say",
]



class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends "(default: …)" to every option that has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def say(args, *parts) -> None:
    """A progress message on stderr, unless --quiet."""
    if not getattr(args, "quiet", False):
        print(*parts, file=sys.stderr)


# Set by the command line's SIGINT handler (``vaefp_jax.cli._run``). The handler also raises
# KeyboardInterrupt, but where the signal lands while XLA or a C++ callback holds the main
# thread, the exception can be raised inside a finalizer or callback that ignores it; the next
# progress report (main thread, plain Python) raises it again, so Ctrl-C is never lost.
INTERRUPTED = threading.Event()


def on_sigint(signum, frame):
    INTERRUPTED.set()
    raise KeyboardInterrupt


def quiet_unraisable(previous):
    """A ``sys.unraisablehook`` that drops the KeyboardInterrupt of a Ctrl-C raised inside a
    finalizer or callback (JAX's garbage-collection callback, say), which Python would print as
    "Exception ignored … Traceback": the flag :data:`INTERRUPTED` carries it to the next
    progress report instead. Anything else goes to ``previous``."""
    def hook(unraisable):
        if INTERRUPTED.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        previous(unraisable)

    return hook


class StageBars:
    """``progress(stage, done, total)`` for the library's long runs (and the CLI's own
    loops), drawn as one tqdm bar per stage on stderr; nothing when ``quiet``. ``close()``
    ends the last bar."""

    LABELS = {"sweep": "β sweep", "derivatives": "u′, u″, ρ", "peaks": "refine peaks", "merges": "refine merges"}
    UNITS = {"sweep": "β", "derivatives": "β"}

    def __init__(self, quiet: bool):
        self.quiet = bool(quiet)
        self.stage: str | None = None
        self.bar: Any = None
        self.last = time.time()   # when the previous report came: where the next stage began

    def __call__(self, stage: str, done: int, total: int) -> None:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        if self.quiet:
            return
        if stage != self.stage:
            from tqdm.auto import tqdm

            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=self.LABELS.get(stage, stage), file=sys.stderr, dynamic_ncols=True,
                            unit=self.UNITS.get(stage, ""), leave=True)
            self.bar.start_t = self.last   # the stage's time and rate from its start, not its first report
        self.bar.n = done
        self.bar.refresh()
        self.last = time.time()
        if done >= total:   # the stage is over: its bar stops at its own time
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.stage = None, None


def add_data_arguments(p: argparse.ArgumentParser, default: str = "three-clusters", labels: bool = False) -> None:
    from vaefp_jax.datasets import DATASETS

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default, choices=sorted(DATASETS), help="built-in dataset")
    example(g.add_argument("--data", metavar="PATH",
                           help="your own points: .csv (.tsv, .txt), .npy or .npz, one point per row; or an MNIST IDX "
                                "images file (.idx3-ubyte[.gz], e.g. t10k-images-idx3-ubyte.gz): one point per "
                                "image, raw 0-255 pixels, labels from the sibling labels file (…labels-idx1-ubyte"
                                "[.gz]) or --label-column PATH"),
            "{npy}", "{csv} --columns a,b", invalid="{tmp}/no-such-file.csv")
    example(g.add_argument("--columns", metavar="A,B,…", help="data columns of --data, by header name or 0-based "
                                                              "index (default all but the label column); IDX: "
                                                              "0-based pixel indices"),
            "a,b", "2,0", invalid="a,nope", needs="--data {csv}")
    if labels:
        example(g.add_argument("--label-column", metavar="COL",
                               help="a column (or .npz array) of known classes: left out of the data, used to score "
                                    "the clusters (adjusted Rand index); for IDX --data the path of an IDX labels "
                                    "file (.idx1-ubyte[.gz]; default: the sibling labels file, when there is one)"),
                "label", invalid="nope", needs="--data {labelled}")
    example(g.add_argument("--key", metavar="NAME", help=".npz: the array of points (default 'x', or the only array)"),
            "x", invalid="nope", needs="--data {npz}")
    example(g.add_argument("--drop-missing", action="store_true",
                           help="drop the rows of --data with a missing value (empty, NA, NaN, inf) in a column "
                                "used, instead of refusing the file; says how many, and run.json lists them"),
            "", invalid="=1", needs="--data {missing}")
    example(g.add_argument("--n", type=positive_int,
                           help="number of points of the built-in dataset (default: its own)"),
            "12", invalid="0")
    g.add_argument("--seed", type=int, default=0, help="seed of the built-in dataset and of the initial noise")


def load_data(args):
    """(x (n, d) float64, labels (n,) or None, record): the points of --data or --dataset, and
    what they are (file, SHA-256, columns, what was inferred; or the dataset's name, n and seed)."""
    from vaefp_jax import datasets, io

    if args.data:
        if args.n is not None:
            raise ValueError("--n applies to a built-in dataset, not to --data (pick rows with your own tools)")
        t = io.read_table(args.data, columns=args.columns, label_column=getattr(args, "label_column", None),
                          key=args.key, drop_missing=args.drop_missing)
        for note in t.notes:
            say(args, f"{os.path.basename(t.path)}: {note}")
        if t.dropped_rows:   # said even under --quiet: the data analysed is not the whole file
            print(f"vaefp: {os.path.basename(t.path)}: dropped {len(t.dropped_rows)} of {t.rows_in_file} rows with "
                  f"missing values ({t.describe_dropped()}); {t.x.shape[0]} rows are analysed (run.json lists the "
                  "dropped ones)", file=sys.stderr)
        record = {"source": "file", "path": os.path.abspath(t.path), "sha256": t.sha256, "columns": list(t.columns),
                  "label_column": t.label_name, "notes": list(t.notes), "rows_in_file": t.rows_in_file,
                  "dropped_rows": list(t.dropped_rows), "missing": "dropped" if args.drop_missing else "refused"}
        return t.x, t.labels, record
    for flag in ("columns", "label_column", "key"):
        if getattr(args, flag, None) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} applies to --data, not to a built-in dataset")
    if args.drop_missing:
        raise ValueError("--drop-missing applies to --data, not to a built-in dataset (it has no missing values)")
    x, labels = datasets.load_builtin(args.dataset, n=args.n, seed=args.seed, with_labels=True)
    return x, labels, {"source": "builtin", "dataset": args.dataset, "n": int(x.shape[0]), "seed": args.seed}


def add_grid_arguments(p: argparse.ArgumentParser, k: int = 32) -> None:
    g = p.add_argument_group("latent grid")
    example(g.add_argument("--k", type=positive_int, default=k, help="k×k tiles"), "3", invalid="0")
    g.add_argument("--prior", choices=["uniform", "gaussian"], default="uniform",
                   help="uniform on [low, high]² (Appendix A) or N(0, I) tiles")
    example(g.add_argument("--low", type=float, default=-0.5, help="uniform grid: lower edge"), "-1", invalid="0.5")
    example(g.add_argument("--high", type=float, default=0.5, help="uniform grid: upper edge"), "1", invalid="-0.5")
    g.add_argument("--limit", type=positive_float, default=3.0, help="Gaussian grid: interior edges on ±limit")


def make_grid(args):
    from vaefp_jax.grid import LatentGrid

    for flag in ("low", "high"):
        if not math.isfinite(getattr(args, flag)):
            raise ValueError(f"--{flag} must be a finite number, got {getattr(args, flag)}")
    if args.prior == "uniform":
        if not args.low < args.high:
            raise ValueError(f"--low ({args.low}) must be below --high ({args.high})")
        return LatentGrid.uniform(args.k, low=args.low, high=args.high)
    return LatentGrid.gaussian(args.k, limit=args.limit)


def add_solver_arguments(p: argparse.ArgumentParser, protocol: str = "paper", choices=("paper", "tight")) -> None:
    """``--protocol`` (the iteration, from :data:`~vaefp_jax.cli.strategies.PROTOCOLS`) and the
    overrides its strategies take."""
    g = p.add_argument_group("solver")
    add_choice(g, "--protocol", PROTOCOLS, protocol, names=choices)
    add_overrides(g, PROTOCOLS, choices, "--protocol")


def make_iteration(args):
    """The iteration of ``--protocol`` with the overrides given (``--damping``, ``--tol``,
    ``--max-steps``: each sets the field its strategy declares)."""
    return build(PROTOCOLS, args.protocol, args, "--protocol")


def add_map_argument(g) -> None:
    """``--map``, the step map (:data:`~vaefp_jax.cli.strategies.STEP_MAPS`)."""
    add_choice(g, "--map", STEP_MAPS, "auto", what="how F(ψ) and its Jacobian are computed: ")


def make_step_map(args):
    """The step map of ``--map`` (None: the library's default for the problem's size)."""
    return build(STEP_MAPS, args.map, args, "--map")


def add_output_arguments(p: argparse.ArgumentParser, out: str, figures: bool = True) -> None:
    g = p.add_argument_group("output")
    example(g.add_argument("--out", default=out,
                           help="output folder (created, and checked writable, before any compute)"),
            "{tmp}/out", invalid="{file}/sub")
    if figures:
        g.add_argument("--format", choices=["png", "pdf", "svg"], default="png", help="figure file format")
    g.add_argument("--quiet", action="store_true", help="no progress messages or bars")
    g.add_argument("--strict", action="store_true",
                   help=f"exit with code {EXIT_NOT_CONVERGED} when any β did not converge")


def not_converged_exit(args, bad: int) -> int:
    """The exit code of a run in which ``bad`` β did not converge."""
    return EXIT_NOT_CONVERGED if bad and getattr(args, "strict", False) else 0
