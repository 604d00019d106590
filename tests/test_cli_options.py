"""Every option of every ``vaefp`` subcommand, generated from the argument parsers themselves.

For each option (and positional) of ``phase``, ``sweep``, ``figure`` and ``train-vae``, the cases
come from the parser: the values an option accepts are the examples it declares
(:func:`vaefp_jax.cli_types.example`), else each of its choices, else the flag alone, else its
default; the value it refuses is the declared one, else one its type or choices refuse. A new
option is covered without editing this file, and one the rules cannot cover fails
:func:`test_every_option_has_cases` until it declares an example.

Each valid case runs the command in-process on a tiny problem and must exit 0 with no traceback
(or, with ``--strict``, 3 with a line saying what did not converge); each invalid case must exit
2 with exactly one line on stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import struct
import sys
import traceback

import numpy as np
import pytest

from vaefp_jax import cli
from vaefp_jax.cli_types import positive_float, positive_int

# The tiny problem each subcommand runs on: (option, value) pairs; an option the case sets
# itself replaces the base's, and the base's "--n" (built-in data) is left out with "--data".
BASES = {
    "phase": [("--n", "12"), ("--quiet", None), ("--out", "{out}")],
    "sweep": [("--n", "12"), ("--k", "2"), ("--num-betas", "3"), ("--quiet", None), ("--out", "{out}")],
    "figure": [("--small", None), ("--quiet", None), ("--out", "{out}")],
    "train-vae": [("--config", "{vae_config}"), ("--steps", "2"), ("--prior-samples", "200"),
                  ("--posterior-samples", "5"), ("--no-figure", None), ("--quiet", None), ("--out", "{out}")],
}
BUILTIN_ONLY = {"--n": "--data"}
# `vaefp phase` per model: the options of one model are refused with the other
PHASE_MODEL_BASES = {"reduced": [("--max-clusters", "3"), ("--cross-check", "2")],
                     "grid": [("--k", "2"), ("--num-betas", "3"), ("--top-k", "1"), ("--refine-merges", "1")]}
TINY_VAE = dict(encoder_hidden=8, encoder_depth=1, embedding_dim=4, num_couplings=1, coupling_hidden=8,
                coupling_depth=1, decoder_hidden=8, decoder_depth=1, num_samples=2, warmup_steps=1,
                checkpoint_every=2)
SKIPPED_ACTIONS = (argparse._HelpAction, argparse._VersionAction)


def _subparsers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _flag(action) -> bool:
    return action.nargs == 0


def valid_values(action) -> list[str]:
    if getattr(action, "valid_examples", None):
        return list(action.valid_examples)
    if _flag(action):
        return [""]
    if action.choices:
        return [str(c) for c in action.choices]
    if action.default is not None and action.default is not False and action.default != argparse.SUPPRESS:
        return [str(action.default)]
    return []


def invalid_value(action) -> str | None:
    if getattr(action, "invalid_example", None) is not None:
        return action.invalid_example
    if _flag(action):
        return "=1"    # a value given to a flag
    if action.choices:
        return "not-a-choice"
    return {positive_int: "0", positive_float: "-1", int: "1.5", float: "x"}.get(action.type)


def _name(action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def _actions():
    for sub, parser in _subparsers().items():
        for action in parser._actions:
            if not isinstance(action, SKIPPED_ACTIONS):
                yield sub, parser, action


def _cases(kind: str):
    for sub, _, action in _actions():
        values = valid_values(action) if kind == "valid" else [invalid_value(action)]
        for value in values:
            if value is not None:
                yield pytest.param(sub, _name(action), value, id=f"{sub} {_name(action)} {value}".strip())


def _argv(sub: str, option: str, value: str, files: dict) -> list[str]:
    parser = _subparsers()[sub]
    action = next(a for a in parser._actions if _name(a) == option)
    if not action.option_strings:
        own = shlex.split(value)
    elif value.startswith("="):
        own = [option + value]
    else:
        own = [option, *shlex.split(value)]
    own += shlex.split(getattr(action, "needs", ""))
    given = {t.split("=")[0] for t in own if t.startswith("--")}
    bases = list(BASES[sub])
    if sub == "phase":
        model = "grid" if any(a == "--model" and b == "grid" for a, b in zip(own, own[1:])) else "reduced"
        bases += PHASE_MODEL_BASES[model]
    base = []
    for opt, val in bases:
        if opt in given or BUILTIN_ONLY.get(opt) in given:
            continue
        base += [opt] + ([] if val is None else [val])
    argv = [sub, *own, *base]
    for pos in (a for a in parser._actions if not a.option_strings and not isinstance(a, SKIPPED_ACTIONS)):
        if not any(t in (pos.choices or ()) for t in own):
            argv.insert(1, shlex.split(valid_values(pos)[0])[0])
    return [t.format(**files) for t in argv]


def _write_idx(folder, per_digit: int = 5):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_digit)
    images = rng.integers(0, 256, size=(labels.size, 28, 28), dtype=np.uint8)
    ipath, lpath = folder / "images-idx3-ubyte.gz", folder / "labels-idx1-ubyte.gz"
    with gzip.open(ipath, "wb") as f:
        f.write(struct.pack(">IIII", 2051, labels.size, 28, 28) + images.tobytes())
    with gzip.open(lpath, "wb") as f:
        f.write(struct.pack(">II", 2049, labels.size) + labels.tobytes())
    return ipath, lpath


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("options")
    # 12 points in 2-D, as the built-in base problem (one compiled shape for most cases)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.1, (6, 2)), rng.normal(1, 0.1, (6, 2))])
    label = np.repeat(["left", "right"], 6)
    with open(d / "labelled.csv", "w") as f:
        f.write("a,b,label\n" + "".join(f"{float(r[0])!r},{float(r[1])!r},{lab}\n" for r, lab in zip(x, label)))
    np.savetxt(d / "points.csv", np.column_stack([x, x[:, :1] * 2]), delimiter=",", header="a,b,c", comments="")
    with_gaps = np.concatenate([x, x[:2]]).astype(object)
    with_gaps[2, 1], with_gaps[5, 0] = "NA", ""
    np.savetxt(d / "missing.csv", with_gaps, delimiter=",", header="a,b", comments="", fmt="%s")
    np.save(d / "points.npy", x)
    np.savez(d / "points.npz", x=x, y=np.repeat([0, 1], 8))
    (d / "plain.txt").write_text("not a folder\n")
    (d / "tiny.json").write_text(json.dumps(TINY_VAE))
    images, labels = _write_idx(d)
    run = d / "vae"
    assert cli.main(["train-vae", "--config", str(d / "tiny.json"), "--steps", "2", "--prior-samples", "200",
                     "--posterior-samples", "5", "--no-figure", "--quiet", "--out", str(run)]) == 0
    return dict(tmp=str(d), file=str(d / "plain.txt"), csv=str(d / "points.csv"), labelled=str(d / "labelled.csv"),
                missing=str(d / "missing.csv"), npy=str(d / "points.npy"),
                npz=str(d / "points.npz"), vae_config=str(d / "tiny.json"), checkpoint=str(run),
                idx_images=str(images), idx_labels=str(labels))


pytestmark = pytest.mark.usefixtures("keep_x64_setting")


def _run(argv) -> tuple[int, str]:
    """(exit code, traceback text or ""): the command in-process, as ``vaefp`` would run it."""
    try:
        return cli.main(argv), ""
    except SystemExit as stop:
        return stop.code, ""
    except BaseException:   # noqa: BLE001 -- a traceback is the failure this test looks for
        return -1, traceback.format_exc()


def test_every_option_has_cases():
    """Each option has a value it accepts and one it refuses (declare them with cli_types.example)."""
    missing = [f"{sub} {_name(a)}: {what}" for sub, _, a in _actions()
               for what, ok in (("no valid example", valid_values(a)), ("no invalid example", invalid_value(a)))
               if not ok]
    assert not missing, "; ".join(missing)
    assert set(_subparsers()) == set(BASES), "a new subcommand needs its tiny problem in BASES"


def _run_case(sub, option, value, files, tmp_path, capsys) -> tuple[str, int, str]:
    """(the command line, its exit code, its stderr); fails on a traceback."""
    argv = _argv(sub, option, value, dict(files, out=str(tmp_path / "out")))
    code, trace = _run(argv)
    err = capsys.readouterr().err
    assert not trace and "Traceback" not in err, f"vaefp {shlex.join(argv)} raised:\n{trace or err}"
    return "vaefp " + shlex.join(argv), code, err


@pytest.mark.parametrize("sub, option, value", list(_cases("valid")))
def test_option_with_a_valid_value_runs(sub, option, value, files, tmp_path, capsys):
    command, code, err = _run_case(sub, option, value, files, tmp_path, capsys)
    if code == 3 and "--strict" in command:   # the documented exit code: say what did not converge
        assert "did not converge" in err, err
        return
    assert code == 0, f"{command} exited {code}: {err[-2000:]}"


@pytest.mark.parametrize("sub, option, value", list(_cases("invalid")))
def test_option_with_an_invalid_value_is_refused_in_one_line(sub, option, value, files, tmp_path, capsys):
    command, code, err = _run_case(sub, option, value, files, tmp_path, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"{command} exited {code}: {err[-2000:]}"
    assert len(lines) == 1 and "error" in lines[0], f"{command} said: {err!r}"


def test_the_generated_cases_can_fail(monkeypatch, tmp_path, capsys):
    """The old --max-steps crash, put back: the valid case sees the traceback."""
    import dataclasses

    from vaefp_jax.cli import common
    from vaefp_jax.iterations import Accelerated

    def broken(args):
        return dataclasses.replace(Accelerated(), max_steps=args.max_steps)

    monkeypatch.setattr(common, "make_iteration", broken)
    monkeypatch.setattr(sys.modules["vaefp_jax.cli.phase"], "make_iteration", broken)
    code, trace = _run(["phase", "--model", "grid", "--max-steps", "50", "--n", "12", "--quiet", "--out",
                        str(tmp_path)])
    assert code == -1 and "TypeError" in trace
