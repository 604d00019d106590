"""The ``vaefp`` command line.

    vaefp phase                 critical temperatures, merge tree and cluster labels of a data set
    vaefp sweep                 fixed points and u(β) over a range of β
    vaefp figure {1,3,4}        the paper's figures
    vaefp train-vae             the RealNVP-encoder VAE of Figure 1

Exit codes: 0 success; 2 bad input (a one-line message says which, and what to do);
3 some β did not converge and ``--strict`` was given (without it, a warning names
them), or no β converged at all; 130 interrupted (Ctrl-C: one line, and an output
folder left without ``run.json``, which :func:`vaefp_jax.load` refuses).
``--help`` and ``--version`` answer without importing JAX.
"""

from __future__ import annotations

import os
import sys
import warnings

from vaefp_jax.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NOT_CONVERGED, Formatter, OneLineParser
from vaefp_jax.cli.strategies import STEP_MAPS as STEP_MAPS

__all__ = ["STEP_MAPS", "build_parser", "console_main", "main"]


def build_parser() -> OneLineParser:
    from vaefp_jax import __version__
    from vaefp_jax.cli import figure, phase, sweep

    p = OneLineParser(prog="vaefp", description=__doc__, formatter_class=Formatter)
    p.add_argument("--version", action="version", version=f"vaefp_jax {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{phase,sweep,figure,train-vae}")
    phase.register(sub)
    sweep.register(sub)
    figure.register(sub)
    try:
        from vaefp_jax.vae.cli import register as register_vae
    except ImportError:   # the VAE's dependencies (flax, optax, orbax) are missing: no train-vae command
        pass
    else:
        register_vae(sub)
    for parser in sub.choices.values():   # defaults shown in every help
        parser.formatter_class = Formatter
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """The package's warnings as one line on stderr (``vaefp: warning: …``), not Python's
    two-line form with a source line; shown even under --quiet."""
    if "vaefp_jax" in str(filename):
        print(f"vaefp: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _run(args)


def console_main() -> None:
    """The ``vaefp`` executable: :func:`main`, then exit. After Ctrl-C it leaves at once
    (``os._exit``, streams flushed): XLA's threads may still be running the interrupted
    computation, and the interpreter's normal teardown under them can crash (SIGSEGV) where
    the user was promised exit code 130."""
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _run(args) -> int:
    import signal
    import threading

    from vaefp_jax.cli.common import INTERRUPTED, on_sigint, quiet_unraisable

    INTERRUPTED.clear()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    previous_hook = sys.unraisablehook
    sys.unraisablehook = quiet_unraisable(previous_hook)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("vaefp: interrupted: nothing more was written (a folder without run.json is incomplete)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as err:
        print(f"vaefp: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:   # a full disk, a file that vanished: what and where, not a traceback
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"vaefp: error: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:
        from vaefp_jax.engine.solution import NotConvergedError

        if not isinstance(err, NotConvergedError):
            raise
        print(f"vaefp: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    finally:
        sys.unraisablehook = previous_hook
        if main_thread and previous is not None:
            signal.signal(signal.SIGINT, previous)


def _one_line(err) -> str:
    return " ".join(str(err).split())
