"""``vaefp phase`` and the command-line conventions: --version, --help without JAX, --strict, outputs."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import cli
from vaefp_jax.cli_types import EXIT_BAD_INPUT, EXIT_NOT_CONVERGED

SMALL = ["--model", "grid", "--k", "6", "--num-betas", "10", "--top-k", "3", "--refine-merges", "2", "--quiet"]



pytestmark = pytest.mark.usefixtures("keep_x64_setting")

def test_phase_on_a_builtin_dataset(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["phase", "--n", "60", "--out", str(out), "--format", "pdf"] + SMALL[:-1])   # not --quiet
    assert rc == 0
    captured = capsys.readouterr()
    text = captured.out
    # a bar per stage on stderr, each at its end: every β of the sweep, every refinement
    assert "β sweep" in captured.err and "10/10" in captured.err and "refine peaks" in captured.err
    assert "β_c (sweep)" in text and "merge tree" in text and "adjusted Rand index" in text
    for name in ("run.json", "phase.npz", "betas.csv", "critical.csv", "merges.csv", "labels.csv", "linkage.csv",
                 "phase.pdf", "tree.pdf"):
        assert (out / name).is_file(), name
    r = vf.load(out)
    assert isinstance(r, vf.PhaseResult) and r.x.shape == (60, 2)
    assert r.record["data"] == {"source": "builtin", "dataset": "three-clusters", "n": 60, "seed": 0,
                                "standardized": False} | {k: r.record["data"][k] for k in ("d", "working_scale")}
    rows = list(csv.reader(open(out / "labels.csv")))
    assert len(rows) == 61 and rows[0][:3] == ["point", "input_row", "true_label"]
    assert len(rows[0]) == 3 + len(r.tree.beta)


def _iris_with_species(path, **kw):
    from sklearn.datasets import load_iris

    d = load_iris()
    with open(path, "w", newline="", **kw) as f:
        w = csv.writer(f)
        w.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for row, t in zip(d.data, d.target):
            w.writerow(list(row) + [d.target_names[t]])
    return d


def test_phase_on_a_user_csv_with_a_text_label_column(tmp_path, capsys):
    path = tmp_path / "iris.csv"
    _iris_with_species(path)
    assert cli.main(["phase", "--data", str(path), "--out", str(tmp_path / "a")] + SMALL) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert "species" in err and "--label-column" in err and len(err.splitlines()) == 1
    rc = cli.main(["phase", "--data", str(path), "--label-column", "species", "--standardize", "--protocol", "tight",
                   "--out", str(tmp_path / "b")] + SMALL)
    assert rc == 0
    captured = capsys.readouterr()
    assert "adjusted Rand index" in captured.out and "β sweep" not in captured.err   # --quiet: no bars
    r = vf.load(tmp_path / "b")
    assert r.record["data"]["columns"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert r.record["data"]["sha256"] == vf.runs.file_sha256(path) and r.record["data"]["standardized"]
    assert set(r.true_labels) == {"setosa", "versicolor", "virginica"}
    np.testing.assert_allclose(r.x.mean(0), 0, atol=1e-12)


def test_out_folder_is_checked_before_any_compute(tmp_path, capsys, monkeypatch):
    import importlib

    import vaefp_jax.phase.analysis as analysis

    split = importlib.import_module("vaefp_jax.phase.split_analysis")   # the module (the package exports the function)
    monkeypatch.setattr(analysis, "phase_analysis", lambda *a, **k: pytest.fail("computed before the check"))
    monkeypatch.setattr(split, "split_analysis", lambda *a, **k: pytest.fail("computed before the check"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for command in ("phase", "sweep"):
        assert cli.main([command, "--out", str(blocker), "--quiet"]) == EXIT_BAD_INPUT
        assert "is an existing file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["phase", "--model", "grid", "--beta-min", "1", "--beta-max", "0.5"], "must exceed"),
    (["phase", "--model", "grid", "--num-betas", "2"], "≥ 3"),
    (["phase", "--columns", "a"], "applies to --data"),
    (["phase", "--model", "grid", "--low", "1", "--high", "0"], "must be below"),
    (["phase", "--model", "grid", "--protocol", "accelerated", "--damping", "0.5"], "--damping"),
    (["phase", "--k", "3"], "--k applies to --model grid"),
    (["phase", "--model", "grid", "--max-clusters", "3"], "applies to --model reduced"),
])
def test_bad_options_get_one_line_errors(tmp_path, capsys, argv, match):
    assert cli.main(argv + ["--out", str(tmp_path / "o"), "--quiet"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_unknown_column_of_a_user_file(tmp_path, capsys):
    path = tmp_path / "pts.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(10, 2)), delimiter=",", header="a,b", comments="")
    assert cli.main(["phase", "--data", str(path), "--columns", "a,zz", "--out", str(tmp_path / "o"),
                     "--quiet"]) == EXIT_BAD_INPUT
    assert "zz" in capsys.readouterr().err


def test_strict_exit_code_when_some_beta_did_not_converge(tmp_path, capsys):
    argv = ["sweep", "--n", "30", "--k", "6", "--num-betas", "4", "--max-steps", "2", "--quiet"]
    assert cli.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert "did not converge" in capsys.readouterr().err
    assert cli.main(argv + ["--out", str(tmp_path / "b"), "--strict"]) == EXIT_NOT_CONVERGED
    run = vf.load(tmp_path / "b")
    assert isinstance(run, vf.SweepRun) and not run.converged.all()
    assert run.record["iteration"]["max_steps"] == 2 and run.record["data"]["dataset"] == "three-clusters"
    np.testing.assert_array_equal(run.beta, np.geomspace(1e-4, 1.0, 4))
    argv = ["phase", "--n", "30", "--protocol", "paper", "--max-steps", "20", "--continuation", "none"] + SMALL
    assert cli.main(argv + ["--out", str(tmp_path / "c")]) == 0
    assert "did not converge" in capsys.readouterr().err
    r = vf.load(tmp_path / "c")
    assert 0 < r.converged.sum() < r.beta.size and len(r.tree.beta) == r.converged.sum()
    assert cli.main(argv + ["--out", str(tmp_path / "d"), "--strict"]) == EXIT_NOT_CONVERGED
    argv = ["phase", "--n", "30", "--protocol", "paper", "--max-steps", "2"] + SMALL
    assert cli.main(argv + ["--out", str(tmp_path / "e")]) == EXIT_NOT_CONVERGED
    assert "none of the 10 β converged" in capsys.readouterr().err


def test_version_and_help():
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "vaefp_jax", "--version"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == f"vaefp_jax {vf.__version__}"
    # --help of every command answers without importing JAX, and shows the defaults
    probe = ("import sys\nfrom vaefp_jax.cli import main\n"
             "for c in ([], ['phase'], ['sweep'], ['figure'], ['train-vae']):\n"
             "    try:\n        main(c + ['--help'])\n    except SystemExit:\n        pass\n"
             "print('JAX IMPORTED' if 'jax' in sys.modules else 'no jax')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("no jax"), out.stderr
    assert "(default: 48)" in out.stdout and "(default: runs/phase)" in out.stdout
    assert "(default: 64)" in out.stdout and "(default: 12)" in out.stdout


def test_standardising_a_nearly_constant_column_warns_in_one_line(tmp_path, capsys, monkeypatch):
    # one point with a rare value in a column that is otherwise 0: standardised it lies
    # √(n − 1) ≈ 7.7 (n = 60) or √199 ≈ 14 (n = 200) standard deviations out
    import vaefp_jax.phase.analysis as analysis

    def stop(*a, **k):
        raise ValueError("stopped after the data checks")

    monkeypatch.setattr(analysis, "sweep", stop)
    rng = np.random.default_rng(0)
    for n, warned in ((60, False), (200, True)):
        x = np.column_stack([rng.normal(size=n), np.zeros(n)])
        x[0, 1] = 5.0
        z = analysis.standardize(x)[0]
        assert abs(z[0, 1]) == pytest.approx(np.sqrt(n - 1), rel=1e-12)   # closed form
        assert analysis.extreme_values(z) == (([1], 1) if warned else ([], 0))
        path = tmp_path / f"x{n}.npy"
        np.save(path, x)
        rc = cli.main(["phase", "--data", str(path), "--standardize", "--out", str(tmp_path / f"o{n}")] + SMALL)
        assert rc == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "warning" in line]
        if warned:
            with (pytest.warns(UserWarning, match="standardising put 1 points"),
                  pytest.raises(ValueError, match="stopped")):
                analysis.phase_analysis(x, standardize_data=True)   # the Python API warns too
            assert len(lines) == 1 and lines[0].startswith("vaefp: warning: standardising put 1 points beyond 10")
            assert "columns 1:" in lines[0] and "pixels" in lines[0]
        else:
            assert lines == []


def test_phase_reduced_model_default(tmp_path, capsys):
    """`vaefp phase` without --model: the reduced model's outputs, exit 0, and the one-line
    report of the splits; run.json reads back as a SplitResult whose splits are exact roots."""
    import vaefp_jax as vf

    out = tmp_path / "r"
    rc = cli.main(["phase", "--n", "60", "--max-clusters", "4", "--cross-check", "2", "--quiet", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "splits (" in text and "adjusted Rand index" in text
    for name in ("run.json", "tree.npz", "splits.csv", "levels.csv", "labels.csv", "linkage.csv", "sweep.csv",
                 "phase.png", "tree.png"):
        assert (out / name).is_file(), name
    res = vf.load(out)
    assert res.record["kind"] == "phase-tree" and len(res.levels) == 4
    assert res.splits[0].exact and abs(res.splits[0].condition) <= 1e-8
    header = (out / "labels.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["point", "input_row", "true_label"] and header[3:] == [f"clusters={k}" for k in range(1, 5)]


def test_phase_reads_idx_files(tmp_path, capsys):
    """MNIST's own format through the command line, labels from the sibling file."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3, dtype=np.uint8), 8)
    images = np.clip(rng.normal(60 + 60 * labels[:, None, None], 20, (24, 4, 4)), 0, 255).astype(np.uint8)
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 24, 4, 4) + images.tobytes())
    with gzip.open(tmp_path / "t-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 24) + labels.tobytes())
    rc = cli.main(["phase", "--data", str(tmp_path / "t-images-idx3-ubyte.gz"), "--max-clusters", "3",
                   "--cross-check", "0", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 0
    import vaefp_jax as vf

    res = vf.load(tmp_path / "o")
    assert res.x.shape == (24, 16) and sorted(set(res.true_labels)) == ["0", "1", "2"]


def test_a_new_step_map_is_one_registry_entry_away_from_vaefp_phase(tmp_path, monkeypatch, capsys):
    """The tests' own map (tests/toy_map.py, nothing but evaluate and order_parameter), added to
    the command line's map table, runs the whole grid analysis: sweep with Accelerated (Newton
    and certificate through its default Jacobian), u′ and u″, the refinements. Its answer is
    the dense map's: the same u at every β and the same refined β_c."""
    from vaefp_jax.cli import strategies

    sys.path.insert(0, os.path.dirname(__file__))
    monkeypatch.setitem(strategies.STEP_MAPS, "toy", strategies.Strategy("toy", "toy_map:ToyMap", "the tests' map"))
    argv = ["phase", "--n", "40", "--k", "4", "--num-betas", "8", "--top-k", "2", "--refine-merges", "2", "--quiet",
            "--model", "grid"]
    assert cli.main(argv + ["--map", "toy", "--out", str(tmp_path / "toy")]) == 0
    assert cli.main(argv + ["--map", "dense", "--out", str(tmp_path / "dense")]) == 0
    toy, dense = vf.load(tmp_path / "toy"), vf.load(tmp_path / "dense")
    assert "ToyMap" in str(toy.record["step_map"]) and "DenseMap" in str(dense.record["step_map"])
    assert toy.converged.all() and dense.converged.all()
    np.testing.assert_allclose(toy.u, dense.u, rtol=1e-7)
    np.testing.assert_allclose(toy.du, dense.du, rtol=1e-5, atol=1e-8 * np.abs(dense.du).max())
    np.testing.assert_allclose(toy.tree.beta, dense.tree.beta, rtol=1e-12)
    heights = lambda r: np.array([m.height for m in r.tree.merges])
    np.testing.assert_allclose(heights(toy), heights(dense), rtol=1e-7)
    with pytest.raises(SystemExit) as e:   # argparse's one-line usage error
        cli.main(argv + ["--map", "nosuch", "--out", str(tmp_path / "x")])
    assert e.value.code == EXIT_BAD_INPUT and "invalid choice: 'nosuch'" in capsys.readouterr().err
    assert cli.main(["phase", "--map", "dense", "--out", str(tmp_path / "y"), "--quiet"]) == EXIT_BAD_INPUT
    assert "--map applies to --model grid" in capsys.readouterr().err
