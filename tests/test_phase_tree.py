"""The merge tree and point labels (vaefp_jax.phase.tree), checked against SciPy and by construction."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, is_monotonic, is_valid_linkage

from vaefp_jax.clusters import adjusted_rand_index
from vaefp_jax.phase.scales import covariance_lambda_max, default_beta_range, nearest_neighbour_distances
from vaefp_jax.phase.tree import build_tree, most_probable_tile, nested_levels, point_groups


def _random_hierarchy(rng, n, levels):
    """Nested labels (L, n) made by merging random pairs of clusters, level by level (ascending β)."""
    labels = [np.arange(n)]
    for _ in range(levels - 1):
        cur = labels[-1].copy()
        ids = np.unique(cur)
        if ids.size > 1:
            a, b = rng.choice(ids, 2, replace=False)
            cur[cur == b] = a
        labels.append(np.unique(cur, return_inverse=True)[1])
    return np.array(labels)


@pytest.mark.parametrize("seed", range(5))
def test_linkage_is_valid_and_cuts_back_to_every_level(seed):
    rng = np.random.default_rng(seed)
    n, L = 12, 14
    labels = _random_hierarchy(rng, n, L)
    beta = np.geomspace(1e-3, 1.0, L)
    tree = build_tree(beta, labels)
    assert is_valid_linkage(tree.linkage) and is_monotonic(tree.linkage)
    assert tree.linkage.shape == (n - 1, 4) and tree.linkage[-1, 3] == n
    assert np.all(np.diff(tree.counts) <= 0)
    for lev in range(L):
        # cutting the dendrogram just above level lev's β (below the next merges) gives that level
        cut = beta[lev] * 1.0001 if lev == L - 1 else np.sqrt(beta[lev] * np.sqrt(beta[lev] * beta[lev + 1]))
        flat = fcluster(tree.linkage, t=cut, criterion="distance")
        if tree.complete or lev < L - 1:
            assert adjusted_rand_index(flat, labels[lev]) == 1.0 or labels[lev].max() == flat.max() - 1 == 0


def test_merges_and_refined_heights():
    labels = np.array([[0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 1, 1], [0, 0, 0, 0]])
    beta = np.array([0.1, 0.2, 0.4, 0.8])
    tree = build_tree(beta, labels, heights={2: 0.5})
    assert [len(m.children) for m in tree.merges] == [2, 2, 2]
    assert [m.size for m in tree.merges] == [2, 2, 4]
    assert tree.merges[0].height == pytest.approx(np.sqrt(0.1 * 0.2)) and not tree.merges[0].refined
    assert tree.merges[-1].height == 0.5 and tree.merges[-1].refined and tree.complete
    np.testing.assert_allclose(tree.linkage[:, 2], [np.sqrt(0.02), np.sqrt(0.08), 0.5])
    with pytest.raises(ValueError, match="outside its bracket"):
        build_tree(beta, labels, heights={0: 0.3})
    assert tree.level(beta=0.3) == 1 and tree.level(num_clusters=2) == 2 and tree.level(num_clusters=9) == 0
    with pytest.raises(ValueError, match="below the lowest level"):
        tree.level(beta=0.01)


def test_levels_read_at_the_same_beta_keep_their_exact_heights():
    """Two levels read at one β (a split on arrival): accepted, and the merge between them sits
    exactly there; β decreasing between levels is refused."""
    labels = np.array([[0, 1, 2, 3], [0, 0, 1, 2], [0, 0, 1, 1], [0, 0, 0, 0]])
    beta = np.array([0.1, 0.4, 0.4, 0.8])
    tree = build_tree(beta, labels, heights={1: 0.4, 2: 0.7})
    assert is_valid_linkage(tree.linkage) and is_monotonic(tree.linkage)
    np.testing.assert_array_equal(tree.linkage[:, 2], [np.sqrt(0.04), 0.4, 0.7])
    with pytest.raises(ValueError, match="non-decreasing"):
        build_tree(beta[::-1].copy(), labels)


def test_incomplete_top_is_joined_and_flagged():
    labels = np.array([[0, 1, 2], [0, 0, 1]])
    tree = build_tree(np.array([1.0, 2.0]), labels)
    assert not tree.complete and is_valid_linkage(tree.linkage) and tree.linkage[-1, 2] == 2.0


def test_nested_levels_refine_the_level_above():
    """Independent raw partitions per level (noisy boundary points) become nested, with counts that
    never increase with β, and a partition that is already nested is kept as it is."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.05, (20, 2)) for c in ((0, 0), (1, 0), (0, 1), (1, 1))])
    truth = np.repeat(np.arange(4), 20)
    fine = truth                                   # 4 clusters
    coarse = np.where(truth < 2, 0, 1)             # 2 clusters: {0,1}, {2,3}
    noisy = fine.copy()
    noisy[[3, 45]] = [2, 0]                        # two points read on the wrong side of the coarse split
    groups = []
    for raw in (noisy, coarse, np.zeros(80, int)):
        centres = np.stack([x[raw == g].mean(0) for g in np.unique(raw)])
        groups.append((raw, centres))
    out = nested_levels(x, groups)
    counts = out.max(axis=1) + 1
    assert list(counts) == [4, 2, 1]
    for lev in range(2):   # every cluster of a level inside one cluster of the next
        for c in np.unique(out[lev]):
            assert np.unique(out[lev + 1][out[lev] == c]).size == 1
    assert adjusted_rand_index(out[1], coarse) == 1.0
    # the stray points stay in their own coarse cluster, in its nearest subgroup
    assert adjusted_rand_index(out[0], fine) == 1.0
    # without the coarse split to hold them, they are read as they are
    assert adjusted_rand_index(nested_levels(x, groups[:1])[0], noisy) == 1.0


def test_point_groups_follow_the_most_probable_tile():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3))
    psi = np.concatenate([np.zeros((4, 3)), np.ones((3, 3)), x[:2]])
    lp = np.log(np.full(psi.shape[0], 1 / psi.shape[0]))
    beta = 0.7
    logits = lp[None] - ((x[:, None] - psi[None]) ** 2).sum(-1) / (2 * beta)   # independent NumPy
    np.testing.assert_array_equal(most_probable_tile(x, psi, beta, lp, chunk=7), logits.argmax(1))
    labels, centres = point_groups(x, psi, beta, lp, merge_tol=1e-6)
    assert centres.shape == (labels.max() + 1, 3)
    tile_group = {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 2, 8: 3}
    expect = np.array([tile_group[a] for a in logits.argmax(1)])
    assert adjusted_rand_index(labels, expect) == 1.0


def test_beta_range_from_the_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3)) * [3.0, 1.0, 0.2]
    x[5] = x[6]                                          # a duplicated point
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(nearest_neighbour_distances(x, chunk=7), d.min(1), atol=1e-12)
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
    assert covariance_lambda_max(x) == pytest.approx(lam, rel=1e-12)
    lo, hi = default_beta_range(x)
    nn = d.min(1)
    assert hi == pytest.approx(2 * lam) and lo == pytest.approx(np.quantile(nn[nn > 0], 0.1) ** 2 / 8)
    with pytest.raises(ValueError, match="fewer than two distinct points"):
        default_beta_range(np.ones((5, 2)))


def test_adjusted_rand_index_against_scikit_learn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(2, 50))
        a, b = rng.integers(0, rng.integers(1, 6), n), rng.integers(0, rng.integers(1, 6), n)
        assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand_index(np.array(["a", "b", "b"]), np.array([5, 7, 7])) == 1.0
