"""phase_analysis on real data (scikit-learn's iris and wine): the merge tree, labels, saving."""

import json

import jax
import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, is_valid_linkage
from sklearn.datasets import load_iris, load_wine

import vaefp_jax as vf
from vaefp_jax.clusters import adjusted_rand_index
from vaefp_jax.phase.scales import covariance_lambda_max

NUM_BETAS = 14
# Damped.tight (undamped, tol 1e-10) compiles in a tenth of Accelerated's time; `vaefp phase`'s
# default (Accelerated) is run by tests/test_cli_phase.py.
SETTINGS = dict(grid=vf.LatentGrid.uniform(6), num_betas=NUM_BETAS, top_k=3, refine_merges=2,
                iteration=vf.Damped.tight())


EVENTS = {}   # data set -> the (stage, done, total) calls of phase_analysis's progress


# wine behind `slow` (suite time on 2 cores); tests/test_real_data.py runs wine in every run.
@pytest.fixture(scope="module", params=["iris", pytest.param("wine", marks=pytest.mark.slow)])
def analysed(request):
    data = {"iris": load_iris, "wine": load_wine}[request.param]()
    events = EVENTS.setdefault(request.param, [])
    with jax.enable_x64(True):
        result = vf.phase_analysis(data.data, standardize_data=True, true_labels=data.target,
                                   progress=lambda *e: events.append(e), **SETTINGS)
    return request.param, data, result


def test_progress_reports_every_beta_and_refinement(analysed):
    name, _, r = analysed
    events = EVENTS[name]
    stages = [e[0] for e in events]
    # in order, each stage once and contiguous
    assert [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] == [
        s for s in ("sweep", "derivatives", "peaks", "merges") if s in stages]
    assert [e for e in events if e[0] == "sweep"] == [("sweep", j, NUM_BETAS) for j in range(1, NUM_BETAS + 1)]
    derivatives = [e for e in events if e[0] == "derivatives"]   # in at most 8 chunks of β
    assert 1 <= len(derivatives) <= 8 and all(e[2] == NUM_BETAS for e in derivatives)
    assert [e[1] for e in derivatives] == sorted({e[1] for e in derivatives}) and derivatives[-1][1] == NUM_BETAS
    peaks = [e for e in events if e[0] == "peaks"]
    assert len(peaks) == len(r.critical) and all(e[2] == len(r.critical) for e in peaks)
    merges = [e for e in events if e[0] == "merges"]
    refined_brackets = {(m.beta_low, m.beta_high) for m in r.tree.merges if m.refined}
    assert len(merges) == len(refined_brackets) <= SETTINGS["refine_merges"]


def test_last_merge_is_at_lambda_max(analysed):
    """Above λ_max of the (standardised) covariance the collapsed point is the only stable fixed
    point (Prop. 5): the tree's last merge sits there, to within the sweep's spacing."""
    _, data, r = analysed
    z = (data.data - data.data.mean(0)) / data.data.std(0)
    lam = np.linalg.eigvalsh(np.cov(z.T, bias=True)).max()
    assert covariance_lambda_max(r.x) == pytest.approx(lam, rel=1e-12)
    spacing = np.log(r.beta[1] / r.beta[0])
    assert r.tree.complete and r.tree.counts[-1] == 1
    last = r.tree.merges[-1]
    assert last.size == z.shape[0] and last.refined
    assert abs(np.log(last.height / lam)) < spacing
    assert last.beta_low < lam <= last.beta_high


def test_labels_at_every_level_and_monotone_counts(analysed):
    _, data, r = analysed
    n = data.data.shape[0]
    tree = r.tree
    assert tree.labels.shape == (int(r.converged.sum()), n)
    assert np.all(tree.labels >= 0) and np.all(tree.labels < tree.counts[:, None])
    for lev in range(len(tree.beta)):   # labels 0..count−1, all used
        assert np.unique(tree.labels[lev]).size == tree.counts[lev]
    assert np.all(np.diff(tree.counts) <= 0), "clusters must never increase with β on a cooling sweep"
    for lev in range(len(tree.beta) - 1):   # nested: each cluster inside one cluster of the next level
        pairs = np.unique(np.stack([tree.labels[lev], tree.labels[lev + 1]]), axis=1)
        assert pairs.shape[1] == tree.counts[lev]
    assert is_valid_linkage(tree.linkage)
    # cutting the linkage between two levels gives the lower one
    lev = int(np.nonzero(tree.counts <= 4)[0][0])
    cut = np.nextafter(min([m.height for m in tree.merges if m.beta_low >= tree.beta[lev]] + [np.inf]), 0)
    flat = fcluster(tree.linkage, t=cut, criterion="distance")
    assert adjusted_rand_index(flat, tree.labels[lev]) == 1.0


def test_scores_against_the_classes(analysed):
    name, data, r = analysed
    s = r.score()
    assert s["classes"] == 3
    assert np.array_equal(r.labels_at(num_clusters=3), r.tree.labels[s["level"]])
    assert r.ari[-1] == 0.0                        # one cluster carries no information
    # far above chance (ARI ~ 0) on these well-separated species/cultivars
    assert s["ari"] > 0.4, (name, s)
    assert s["ari"] == pytest.approx(adjusted_rand_index(data.target, r.labels_at(num_clusters=3)))


def test_critical_table(analysed):
    _, _, r = analysed
    assert 1 <= len(r.critical) <= SETTINGS["top_k"]
    betas = [c.beta for c in r.critical]
    assert betas == sorted(betas)
    for c in r.critical:
        j = int(np.nonzero(r.beta == c.beta)[0][0])
        assert c.abs_d2u == pytest.approx(abs(r.d2u[j]))
        if np.isfinite(c.refined):   # within the bracket of the neighbouring sweep points
            assert r.beta[j - 1] <= c.refined <= r.beta[j + 1]
    assert len(r.beta_table()) == NUM_BETAS


def test_save_load_round_trip(analysed, tmp_path):
    _, _, r = analysed
    paths = r.save(tmp_path / "run", format="svg")
    assert {p.rsplit("/", 1)[-1] for p in paths} >= {"run.json", "phase.npz", "betas.csv", "critical.csv",
                                                    "labels.csv", "linkage.csv", "phase.svg", "tree.svg"}
    back = vf.load(tmp_path / "run")
    assert isinstance(back, vf.PhaseResult)
    for k in ("x", "log_prior", "beta", "u", "du", "d2u", "spectral_radius", "steps", "status", "residual",
              "distinct", "psi", "true_labels"):
        np.testing.assert_array_equal(getattr(back, k), getattr(r, k), err_msg=k)
    np.testing.assert_array_equal(back.tree.labels, r.tree.labels)
    np.testing.assert_array_equal(back.tree.linkage, r.tree.linkage)
    assert back.tree.merges == r.tree.merges
    np.testing.assert_equal(back.critical_table(), r.critical_table())   # NaN (unrefined) equals NaN
    text = (tmp_path / "run" / "run.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"run.json is not strict JSON: {c}"))
    assert back.merge_tol == r.merge_tol and back.score() == r.score()
    assert back.record["data"] == r.record["data"] and back.record["versions"]["vaefp_jax"] == vf.__version__
    assert back.record["iteration"] == {"type": "Damped", "damping": 0.0, "tol": None, "max_steps": 20000,
                                        "init_noise": 0.1} and back.record["dtype"] == "float64"
    df = back.to_dataframe("betas")
    assert list(df["beta"]) == list(r.beta) and df.shape[0] == NUM_BETAS
    assert back.to_dataframe("labels").shape == (r.x.shape[0], len(r.tree.beta))
    with pytest.raises(ValueError, match="table must be"):
        back.to_dataframe("nope")


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n ≥ 2"):
        vf.phase_analysis(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        vf.phase_analysis(np.array([[0.0, np.nan], [1.0, 2.0]]))
    z, mean, scale = vf.phase.standardize(np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_allclose(z, [[-1.2247448713915890, 0], [0, 0], [1.2247448713915890, 0]], rtol=1e-15)
    np.testing.assert_array_equal(scale, [np.sqrt(2 / 3), 1.0])
    with pytest.raises(ValueError, match="at least 3 β"):
        vf.phase_analysis(np.random.default_rng(0).normal(size=(10, 2)), betas=[0.1, 1.0])
