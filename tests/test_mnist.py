"""The packaged 40-image MNIST subset and the IDX reader."""

import gzip
import pathlib

import numpy as np
import pytest

from vaefp_jax.mnist import Exemplars, load_exemplars, load_idx, read_idx

MNIST_DIR = pathlib.Path("/work/shared/data/mnist")


def _write_idx(tmp_path, images, labels, *, gz=False, image_magic=2051, label_magic=2049, rows=None):
    n, r, c = images.shape
    head = image_magic.to_bytes(4, "big") + n.to_bytes(4, "big") + (rows or r).to_bytes(4, "big") + c.to_bytes(4, "big")
    lhead = label_magic.to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    ipath = tmp_path / ("img.idx3-ubyte" + (".gz" if gz else ""))
    lpath = tmp_path / ("lab.idx1-ubyte" + (".gz" if gz else ""))
    opener = gzip.open if gz else open
    with opener(ipath, "wb") as f:
        f.write(head + images.astype(np.uint8).tobytes())
    with opener(lpath, "wb") as f:
        f.write(lhead + labels.astype(np.uint8).tobytes())
    return ipath, lpath


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    return images, labels


def test_packaged_subset():
    ex = load_exemplars()
    assert isinstance(ex, Exemplars) and len(ex) == 40
    images, labels, indices = ex  # unpacks like a tuple
    assert images.shape == (40, 784) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 4))
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 4))  # grouped by digit
    assert len(set(indices.tolist())) == 40 and indices.min() >= 0 and indices.max() < 10_000
    # Pixels are k/255 exactly (unmodified uint8 data).
    np.testing.assert_allclose(images * 255, np.round(images * 255), atol=1e-4)


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="MNIST IDX files not available")
def test_packaged_subset_matches_idx_files():
    ex = load_exemplars()
    full = load_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(ex.indices, full.indices)
    np.testing.assert_array_equal(ex.labels, full.labels)
    np.testing.assert_array_equal(ex.images, full.images)
    # …and they are the first 4 test images of each digit.
    _, all_labels = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    for d in range(10):
        np.testing.assert_array_equal(ex.indices[ex.labels == d], np.flatnonzero(all_labels == d)[:4])


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_first_per_digit(tmp_path, synthetic, gz):
    images, labels = synthetic
    ex = load_idx(*_write_idx(tmp_path, images, labels, gz=gz), per_digit=4)
    assert ex.images.shape == (40, 784)
    for d in range(10):
        want = np.flatnonzero(labels == d)[:4]
        np.testing.assert_array_equal(ex.indices[ex.labels == d], want)
    np.testing.assert_allclose(ex.images, images[ex.indices].reshape(40, -1) / 255.0, atol=1e-7)


def test_load_idx_seeded_and_all(tmp_path, synthetic):
    images, labels = synthetic
    paths = _write_idx(tmp_path, images, labels)
    a, b = load_idx(*paths, per_digit=3, seed=5), load_idx(*paths, per_digit=3, seed=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(np.bincount(a.labels, minlength=10), np.full(10, 3))
    np.testing.assert_array_equal(labels[a.indices], a.labels)
    assert load_idx(*paths, per_digit=None).images.shape == (60, 784)


def test_bad_magic_raises(tmp_path, synthetic):
    images, labels = synthetic
    with pytest.raises(ValueError, match="magic"):
        load_idx(*_write_idx(tmp_path, images, labels, image_magic=2049))
    with pytest.raises(ValueError, match="magic"):
        load_idx(*_write_idx(tmp_path, images, labels, gz=True, label_magic=2051))


def test_bad_shape_and_counts_raise(tmp_path, synthetic):
    images, labels = synthetic
    with pytest.raises(ValueError, match="28"):
        load_idx(*_write_idx(tmp_path, images, labels, rows=27))
    with pytest.raises(ValueError, match="labels"):
        load_idx(*_write_idx(tmp_path, images, labels[:-1]))
    with pytest.raises(ValueError, match="only"):
        load_idx(*_write_idx(tmp_path, images, labels), per_digit=7)
    with pytest.raises(ValueError, match="not found"):
        load_idx(tmp_path / "missing", tmp_path / "missing2")
