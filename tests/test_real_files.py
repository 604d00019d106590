"""Real tables as people have them, through the command line and through Python: missing values
(refused in one line, or dropped with the labels kept aligned), a constant column under
standardisation (reported once), and columns whose scales differ by 29 orders of magnitude
(a finite result with every β converged, in float64)."""

import csv
import json

import jax
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.metrics import adjusted_rand_score

import vaefp_jax as vf
from vaefp_jax import cli, io

TINY = ["--model", "grid", "--k", "2", "--num-betas", "5", "--top-k", "1", "--refine-merges", "1", "--quiet"]


pytestmark = pytest.mark.usefixtures("keep_x64_setting")


def _iris_sample(per_class: int = 12):
    """(x (3·per_class, 4), species names): the first rows of each species."""
    iris = load_iris()
    rows = np.concatenate([np.nonzero(iris.target == c)[0][:per_class] for c in range(3)])
    return iris.data[rows], iris.target_names[iris.target[rows]]


def _write(path, x, labels, holes=()):
    """A CSV with a header, the species as a text column, and the cells of ``holes``
    ((row, column, text)) replaced by missing-value markers."""
    cells = [[repr(float(v)) for v in row] + [str(lab)] for row, lab in zip(x, labels)]
    for r, c, text in holes:
        cells[r][c] = text
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sepal length", "sepal width", "petal length", "petal width", "species"])
        w.writerows(cells)


HOLES = [(3, 0, ""), (7, 2, "NA"), (20, 1, "NaN"), (21, 3, "inf"), (30, 4, "")]   # the last: a missing label
DROPPED = sorted({r for r, _, _ in HOLES})


def test_missing_values_are_refused_in_one_line(tmp_path, capsys):
    x, species = _iris_sample()
    path = tmp_path / "holes.csv"
    _write(path, x, species, HOLES)
    code = cli.main(["phase", "--data", str(path), "--label-column", "species", *TINY, "--out", str(tmp_path / "o")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    assert f"{len(DROPPED)} of {len(x)} rows have a missing value" in err[0]
    assert "line 5, column 'sepal length' (index 0)" in err[0]          # row 3 is on line 5 (header, 1-based)
    assert "--drop-missing" in err[0]
    assert not (tmp_path / "o" / "run.json").exists()


def test_dropped_rows_keep_the_labels_aligned_through_the_command_line(tmp_path, capsys):
    x, species = _iris_sample()
    path = tmp_path / "holes.csv"
    _write(path, x, species, HOLES)
    out = tmp_path / "o"
    code = cli.main(["phase", "--data", str(path), "--label-column", "species", "--drop-missing", "--standardize",
                     *TINY, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"dropped {len(DROPPED)} of {len(x)} rows" in err
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["dropped_rows"] == DROPPED and record["data"]["rows_in_file"] == len(x)
    kept = np.setdiff1d(np.arange(len(x)), DROPPED)
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert [int(r["input_row"]) for r in rows] == kept.tolist()
    assert [r["true_label"] for r in rows] == species[kept].tolist()
    # the scored level's ARI, recomputed by hand from the file's own labels on the kept rows
    r = vf.load(out)
    score = r.score()
    level = [k for k in rows[0] if k.startswith("beta=")][score["level"]]
    by_hand = adjusted_rand_score(species[kept], [int(row[level]) for row in rows])
    assert record["score"]["ari"] == pytest.approx(by_hand, abs=1e-12)
    np.testing.assert_allclose(r.x, (x[kept] - x[kept].mean(0)) / x[kept].std(0), rtol=1e-12)


def test_dropped_rows_keep_the_labels_aligned_in_python():
    jax.config.update("jax_enable_x64", True)
    x, species = _iris_sample()
    x = x.copy()
    for r, c, _ in HOLES[:4]:
        x[r, c] = np.nan if c != 3 else np.inf
    with pytest.raises(ValueError, match=r"NaN or inf values in 4 of 36 rows \(row 3, column 0"):
        vf.phase_analysis(x, true_labels=species, grid=vf.LatentGrid.uniform(2), num_betas=5, top_k=1)
    with pytest.warns(UserWarning, match="dropped 4 of 36 rows"):
        r = vf.phase_analysis(x, true_labels=species, grid=vf.LatentGrid.uniform(2), num_betas=5, top_k=1,
                              refine_merges=1, drop_missing=True)
    kept = np.setdiff1d(np.arange(36), [3, 7, 20, 21])
    assert r.record["data"]["dropped_rows"] == [3, 7, 20, 21]
    np.testing.assert_array_equal(r.source_rows, kept)
    np.testing.assert_array_equal(r.true_labels, species[kept])
    lev = r.score()["level"]
    assert r.score()["ari"] == pytest.approx(adjusted_rand_score(species[kept], r.tree.labels[lev]), abs=1e-12)


def test_read_table_drops_rows_and_says_which(tmp_path):
    x, species = _iris_sample()
    path = tmp_path / "holes.csv"
    _write(path, x, species, HOLES)
    t = io.read_table(path, label_column="species", drop_missing=True)
    assert t.dropped_rows == tuple(DROPPED) and t.dropped_lines == tuple(r + 2 for r in DROPPED)
    np.testing.assert_array_equal(t.kept_rows, np.setdiff1d(np.arange(len(x)), DROPPED))
    np.testing.assert_allclose(t.x, x[t.kept_rows])
    np.testing.assert_array_equal(t.labels, species[t.kept_rows])
    # a column left out with --columns does not count: the hole in column 0 is then no hole
    t2 = io.read_table(path, columns="sepal width,petal length,petal width", label_column="species", drop_missing=True)
    assert 3 not in t2.dropped_rows and 7 in t2.dropped_rows


def test_a_constant_column_is_reported_once(tmp_path, capsys):
    x, species = _iris_sample()
    x = np.column_stack([x, np.full(len(x), 2.5)])
    path = tmp_path / "constant.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c,d,flat", comments="")
    assert cli.main(["phase", "--data", str(path), "--standardize", *TINY, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("constant column") == 1 and "'flat'" in err, err
    assert json.loads((tmp_path / "o" / "run.json").read_text())["data"]["constant_columns"] == [4]


@pytest.mark.parametrize("how", ["cli", "python"])
def test_columns_thirty_orders_of_magnitude_apart_converge(tmp_path, capsys, how):
    """A column in units of 1e-20 beside one in units of 1e9, not standardised: every β converges
    (the analysis works in units of the data's spread) and every result is finite."""
    x, species = _iris_sample()
    x = x * np.array([1e-20, 1e9, 1.0, 1.0])
    if how == "cli":
        path = tmp_path / "scales.csv"
        np.savetxt(path, x, delimiter=",", fmt="%.17g")
        assert cli.main(["phase", "--data", str(path), *TINY, "--strict", "--out", str(tmp_path / "o")]) == 0, \
            capsys.readouterr().err
        r = vf.load(tmp_path / "o")
    else:
        jax.config.update("jax_enable_x64", True)
        r = vf.phase_analysis(x, grid=vf.LatentGrid.uniform(2), num_betas=5, top_k=1, refine_merges=1)
    assert r.converged.all(), r.status
    for name in ("u", "du", "d2u", "psi", "residual", "beta"):
        assert np.all(np.isfinite(getattr(r, name))), name
    # the first split sits at λ_max of the covariance (Prop. 5), here ~1e18 from the 1e9 column
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
    assert r.tree.merges[-1].height == pytest.approx(lam, rel=0.05)
    assert r.record["data"]["working_scale"] == 2.0 ** np.round(np.log2(np.sqrt(np.trace(np.cov(x.T, bias=True)))))
