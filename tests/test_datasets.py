import numpy as np
import pytest

import vaefp_jax as vf


@pytest.mark.parametrize("name", sorted(vf.datasets.DATASETS))
def test_builtin_datasets_are_seeded_and_in_the_unit_square(name):
    a = vf.datasets.load_builtin(name, n=90, seed=3)
    b = vf.datasets.load_builtin(name, n=90, seed=3)
    c = vf.datasets.load_builtin(name, n=90, seed=4)
    assert a.shape == (90, 2) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() < 0.75


def test_three_clusters_have_three_scales():
    x = vf.datasets.three_clusters(120, seed=0)
    parts = np.split(x, 3)
    means = np.array([p.mean(0) for p in parts])
    d = sorted(np.linalg.norm(means[i] - means[j]) for i, j in [(0, 1), (0, 2), (1, 2)])
    assert d[0] < 0.5 * d[1]  # one close pair, one far cluster


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        vf.datasets.load_builtin("spiral")
    with pytest.raises(ValueError, match="n must be"):
        vf.datasets.three_clusters(2)
