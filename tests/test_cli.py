"""The ``vaefp`` command line (in-process, small settings)."""

import csv

import numpy as np
import pytest

from vaefp_jax import cli, io

pytestmark = pytest.mark.usefixtures("keep_x64_setting")

def test_sweep_builtin_writes_table_csv_npz(tmp_path, capsys):
    rc = cli.main(["sweep", "--n", "30", "--k", "6", "--num-betas", "5", "--beta-min", "1e-3",
                   "--beta-max", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "beta" in out and "fixed pts" in out
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert len(rows) == 5
    z = np.load(tmp_path / "sweep.npz")
    assert z["psi"].shape == (5, 36, 2) and z["u"].shape == (5,)
    # At β = 1 (> λ_max) everything has collapsed to one fixed point.
    assert int(rows[-1]["distinct_fixed_points"]) == 1
    assert float(rows[-1]["u"]) == pytest.approx(np.trace(np.cov(z["x"].T, bias=True)), rel=1e-3)


@pytest.mark.parametrize("ext", [".npy", ".npz", ".csv"])
def test_sweep_on_user_file(tmp_path, ext):
    x = np.random.default_rng(0).normal(size=(20, 3)) * 0.1
    path = tmp_path / f"pts{ext}"
    if ext == ".npy":
        np.save(path, x)
    elif ext == ".npz":
        np.savez(path, x=x)
    else:
        np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
    np.testing.assert_allclose(io.load_points(path), x)
    rc = cli.main(["sweep", "--data", str(path), "--k", "4", "--num-betas", "3", "--out",
                   str(tmp_path / "o"), "--quiet", "--protocol", "tight", "--float64"])
    assert rc == 0
    assert np.load(tmp_path / "o" / "sweep.npz")["psi"].shape == (3, 16, 3)


@pytest.mark.parametrize(
    "content, ext, match",
    [
        ("1,2\n3,x\n", ".csv", "not numbers"),
        ("1,2\n3\n", ".csv", "different numbers of columns"),
        ("", ".csv", "empty"),
        (None, ".npy", "1-D"),
        ("hello", ".npz", "could not read"),
        ("1 2", ".json", "unsupported"),
        ("1,nan\n2,3\n", ".csv", "NaN"),
    ],
)
def test_malformed_data_files_get_clear_messages(tmp_path, capsys, content, ext, match):
    path = tmp_path / f"bad{ext}"
    if content is None:
        np.save(path, np.arange(5.0))
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=match):
        io.load_points(path)
    rc = cli.main(["sweep", "--data", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert match.split()[0] in capsys.readouterr().err


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert cli.main(["sweep", "--data", str(tmp_path / "nope.npy"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--beta-min", "-1"])
    assert cli.main(["sweep", "--beta-min", "1", "--beta-max", "0.5", "--quiet"]) == 2


@pytest.mark.parametrize("step_map", ["dense", "blocked", "pallas"])
def test_sweep_step_maps_agree(tmp_path, step_map):
    """``--map`` changes how F is computed, not the answer (the Pallas kernels run
    in Pallas's interpreter on CPU)."""
    common = ["sweep", "--n", "24", "--k", "4", "--num-betas", "3", "--beta-min", "1e-2", "--quiet",
              "--float64", "--protocol", "tight", "--max-steps", "300"]
    assert cli.main(common + ["--out", str(tmp_path / "auto")]) == 0
    assert cli.main(common + ["--map", step_map, "--out", str(tmp_path / step_map)]) == 0
    a, b = np.load(tmp_path / "auto" / "sweep.npz"), np.load(tmp_path / step_map / "sweep.npz")
    np.testing.assert_array_equal(a["steps"], b["steps"])
    np.testing.assert_allclose(b["psi"], a["psi"], rtol=0, atol=1e-10)


def test_map_choices_build_the_step_maps():
    import vaefp_jax as vf

    assert cli.STEP_MAPS["auto"].make() is None  # solve's default_step_map
    assert cli.STEP_MAPS["dense"].make() == vf.DenseMap()
    assert cli.STEP_MAPS["blocked"].make() == vf.BlockedMap()
    assert cli.STEP_MAPS["pallas"].make() == vf.PallasMap() and "fused" not in cli.STEP_MAPS
