"""An interrupted run loses nothing it claims: a folder is complete (run.json, written last, lists
every file with its size and SHA-256) or clearly incomplete, and ``vaefp_jax.load`` refuses the
latter in one line; Ctrl-C ends ``vaefp`` with one line and exit code 130."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import cli

TINY = ["--n", "12", "--model", "grid", "--k", "2", "--num-betas", "3", "--top-k", "1", "--refine-merges", "0",
        "--quiet"]


pytestmark = [pytest.mark.usefixtures("keep_x64_setting"), pytest.mark.xdist_group("interrupted")]


def _one_line_refusal(folder):
    with pytest.raises(ValueError) as err:
        vf.load(folder)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("complete") / "run"
    before = jax.config.jax_enable_x64
    assert cli.main(["phase", *TINY, "--out", str(out)]) == 0
    jax.config.update("jax_enable_x64", before)
    return out


def test_a_complete_run_lists_its_files_and_loads(complete_run):
    import json

    record = json.loads((complete_run / "run.json").read_text())
    assert set(record["files"]) == {"phase.npz", "betas.csv", "critical.csv", "merges.csv", "labels.csv",
                                    "linkage.csv", "phase.png", "tree.png"}
    assert isinstance(vf.load(complete_run), vf.PhaseResult)
    assert not [f for f in os.listdir(complete_run) if ".partial-" in f]


def test_a_changed_or_missing_file_is_refused(complete_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(complete_run, copy)
    (copy / "betas.csv").write_text("beta\n1\n")
    assert "betas.csv differs" in _one_line_refusal(copy)
    shutil.copy(complete_run / "betas.csv", copy / "betas.csv")
    assert isinstance(vf.load(copy), vf.PhaseResult)
    os.remove(copy / "labels.csv")
    assert "labels.csv" in _one_line_refusal(copy)


def test_ctrl_c_while_writing_leaves_a_clearly_incomplete_folder(complete_run, tmp_path, monkeypatch, capsys):
    """A rerun into a complete folder, interrupted while writing the figures: exit 130 and one
    line; the folder no longer claims to be complete (its old run.json went first)."""
    import shutil

    import matplotlib.figure

    out = tmp_path / "run"
    shutil.copytree(complete_run, out)

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupt)
    assert cli.main(["phase", *TINY, "--out", str(out)]) == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "interrupted" in err[0]
    assert not (out / "run.json").exists()
    assert not [f for f in os.listdir(out) if ".partial-" in f]
    assert "incomplete" in _one_line_refusal(out)


_KILLED_WHILE_WRITING = textwrap.dedent("""
    import os, signal, sys
    import vaefp_jax.phase.result as result
    from vaefp_jax import cli
    write = result.write_csv
    def killed(path, *args):
        if path.endswith("merges.csv"):
            os.kill(os.getpid(), signal.SIGKILL)   # no Python cleanup at all
        return write(path, *args)
    result.write_csv = killed
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_a_run_killed_while_writing_is_refused_by_load(complete_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(complete_run, out)
    done = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, "phase", *TINY, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (out / "run.json").exists()
    assert "incomplete" in _one_line_refusal(out)


def test_ctrl_c_during_compute_exits_130_in_one_line(tmp_path):
    """SIGINT to ``vaefp phase`` while it computes (a sweep long enough to be caught in it)."""
    proc = subprocess.Popen([sys.executable, "-m", "vaefp_jax", "phase", "--n", "60", "--model", "grid", "--k", "6",
                             "--num-betas", "400", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    seen = ""
    while time.time() < deadline and "data:" not in seen:   # the first progress line: compute has begun
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, seen + err
    assert "Traceback" not in err
    last = [ln for ln in err.splitlines() if ln.strip() and "\r" not in ln and "β" not in ln][-1:]
    assert last and "interrupted" in last[0], err[-2000:]
    assert not (tmp_path / "run" / "run.json").exists()
    assert np.isfinite(proc.returncode)


def test_an_interrupt_swallowed_by_a_callback_is_raised_at_the_next_progress_report(capsys):
    """Ctrl-C that lands while XLA holds the main thread can be raised inside a callback that
    ignores it; the SIGINT handler's flag makes the next progress report raise it again, so the
    command still ends with exit code 130 and one line."""
    import types

    from vaefp_jax.cli import _run
    from vaefp_jax.cli.common import INTERRUPTED, StageBars

    def swallowed(args):
        try:
            signal.raise_signal(signal.SIGINT)          # the handler runs: flag set, KeyboardInterrupt raised …
        except KeyboardInterrupt:
            pass                                        # … and swallowed, as a finalizer would
        StageBars(quiet=True)("sweep", 1, 10)           # the next report
        return 0

    assert _run(types.SimpleNamespace(func=swallowed)) == 130
    assert "interrupted" in capsys.readouterr().err
    INTERRUPTED.clear()
    assert _run(types.SimpleNamespace(func=lambda args: StageBars(quiet=True)("sweep", 1, 10) or 0)) == 0


def test_ctrl_c_inside_a_finalizer_prints_no_traceback():
    """A Ctrl-C that lands in a finalizer or callback (JAX's gc callback) reaches Python's
    unraisable hook: the CLI's hook drops it once the interrupt flag is set (the next progress
    report raises it), and passes anything else on."""
    import types

    from vaefp_jax.cli.common import INTERRUPTED, quiet_unraisable

    seen = []
    hook = quiet_unraisable(seen.append)
    interrupt = types.SimpleNamespace(exc_value=KeyboardInterrupt())
    other = types.SimpleNamespace(exc_value=ValueError("a real bug"))
    try:
        INTERRUPTED.set()
        hook(interrupt)
        hook(other)
        assert seen == [other]
        INTERRUPTED.clear()
        hook(interrupt)   # no Ctrl-C was pressed: not ours to hide
        assert seen == [other, interrupt]
    finally:
        INTERRUPTED.clear()
