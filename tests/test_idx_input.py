"""MNIST's own IDX files as --data: recognised by their magic number (plain or gzip), the raw
pixels as points, labels from the sibling labels file or an explicit path, one-line errors."""

import argparse
import gzip
import hashlib
import pathlib
import struct

import numpy as np
import pytest

from vaefp_jax import io
from vaefp_jax.cli.common import load_data

MNIST_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

N, ROWS, COLS = 7, 4, 3


@pytest.fixture
def pixels():
    return np.random.default_rng(3).integers(0, 256, (N, ROWS, COLS), dtype=np.uint8)


@pytest.fixture
def digits():
    return np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)


def _write(path, payload: bytes):
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_images(path, images, magic=0x00000803):
    n, r, c = images.shape
    return _write(path, struct.pack(">IIII", magic, n, r, c) + images.astype(np.uint8).tobytes())


def write_labels(path, labels, magic=0x00000801):
    return _write(path, struct.pack(">II", magic, len(labels)) + np.asarray(labels, np.uint8).tobytes())


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "train-images.idx3-ubyte",
                                  "train-images.idx3-ubyte.gz"])
def test_images_are_read_with_the_sibling_labels(tmp_path, pixels, digits, name):
    images = write_images(tmp_path / name, pixels)
    gz = name.endswith(".gz")
    lname = name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    write_labels(tmp_path / lname, digits)
    t = io.read_table(images)
    assert t.x.dtype == np.float64 and t.x.shape == (N, ROWS * COLS)
    np.testing.assert_array_equal(t.x, pixels.reshape(N, -1).astype(np.float64))   # raw 0-255, row-major
    np.testing.assert_array_equal(t.labels, [str(d) for d in digits])
    assert t.label_name == lname
    assert t.columns == tuple(f"pixel{j}" for j in range(ROWS * COLS))
    assert t.rows_in_file == N and t.dropped_rows == () and t.path == str(images)
    assert t.sha256 == hashlib.sha256(images.read_bytes()).hexdigest()
    assert any("0–255" in note and "row-major" in note for note in t.notes)
    assert any(lname in note and "sibling" in note for note in t.notes)
    assert any("gzip" in note for note in t.notes) == gz


def test_sibling_of_the_other_compression_and_none(tmp_path, pixels, digits):
    images = write_images(tmp_path / "a-images-idx3-ubyte.gz", pixels)
    t = io.read_table(images)                        # no labels file at all
    assert t.labels is None and t.label_name is None
    assert any("no sibling labels file" in note for note in t.notes)
    write_labels(tmp_path / "a-labels-idx1-ubyte", digits)   # the plain one next to the .gz images
    t = io.read_table(images)
    assert t.label_name == "a-labels-idx1-ubyte"
    np.testing.assert_array_equal(t.labels, [str(d) for d in digits])


def test_recognised_by_magic_not_name(tmp_path, pixels, digits):
    images = write_images(tmp_path / "digits.bin.gz", pixels)
    t = io.read_table(images)
    np.testing.assert_array_equal(t.x, pixels.reshape(N, -1))
    assert t.labels is None
    labels = write_labels(tmp_path / "classes.dat", digits)
    t = io.read_table(images, label_column=str(labels))
    np.testing.assert_array_equal(t.labels, [str(d) for d in digits])
    assert t.label_name == "classes.dat"


def test_explicit_label_path_wins_over_sibling(tmp_path, pixels, digits):
    images = write_images(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    write_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", digits)
    other = digits[::-1].copy()
    (tmp_path / "elsewhere").mkdir()
    explicit = write_labels(tmp_path / "elsewhere" / "mine-labels-idx1-ubyte", other)
    t = io.read_table(images, label_column=explicit)          # a Path works too
    np.testing.assert_array_equal(t.labels, [str(d) for d in other])
    assert t.label_name == "mine-labels-idx1-ubyte"
    # a bare name is also looked for in the images file's folder
    t = io.read_table(images, label_column="t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(t.labels, [str(d) for d in digits])


def test_columns_select_pixels(tmp_path, pixels):
    images = write_images(tmp_path / "x-images-idx3-ubyte", pixels)
    flat = pixels.reshape(N, -1)
    t = io.read_table(images, columns="5,0,11")
    np.testing.assert_array_equal(t.x, flat[:, [5, 0, 11]])
    assert t.columns == ("pixel5", "pixel0", "pixel11")
    t = io.read_table(images, columns=[2, 3])
    np.testing.assert_array_equal(t.x, flat[:, [2, 3]])
    with pytest.raises(ValueError, match="no column names") as err:
        io.read_table(images, columns="pixel0")
    assert str(images) in _one_line(err)
    with pytest.raises(ValueError, match="out of range") as err:
        io.read_table(images, columns=[12])
    _one_line(err)


def test_key_refused_drop_missing_accepted(tmp_path, pixels):
    images = write_images(tmp_path / "x-images-idx3-ubyte", pixels)
    with pytest.raises(ValueError, match="key") as err:
        io.read_table(images, key="x")
    assert str(images) in _one_line(err)
    t = io.read_table(images, drop_missing=True)
    assert t.x.shape == (N, ROWS * COLS) and t.dropped_rows == ()


def test_mismatched_label_count(tmp_path, pixels, digits):
    images = write_images(tmp_path / "t10k-images-idx3-ubyte", pixels)
    labels = write_labels(tmp_path / "t10k-labels-idx1-ubyte", digits[:-1])
    with pytest.raises(ValueError, match="7 images") as err:
        io.read_table(images)
    text = _one_line(err)
    assert str(images) in text and str(labels) in text


def test_bad_label_column(tmp_path, pixels):
    images = write_images(tmp_path / "t10k-images-idx3-ubyte", pixels)
    with pytest.raises(ValueError, match="path of an IDX labels file") as err:
        io.read_table(images, label_column="nope")
    _one_line(err)
    with pytest.raises(ValueError, match="path of an IDX labels file") as err:
        io.read_table(images, label_column=0)
    _one_line(err)
    not_labels = write_images(tmp_path / "other-images-idx3-ubyte", pixels)   # an images file as labels
    with pytest.raises(ValueError, match="magic") as err:
        io.read_table(images, label_column=str(not_labels))
    assert str(not_labels) in _one_line(err)


def test_corrupt_files(tmp_path, pixels, digits):
    good = struct.pack(">IIII", 0x803, N, ROWS, COLS) + pixels.tobytes()
    cases = {
        "truncated-images-idx3-ubyte": good[:-5],                                     # pixels missing
        "short-images-idx3-ubyte": good[:9],                                          # header cut short
        "wrongmagic-images-idx3-ubyte": struct.pack(">I", 0x0000_0802) + good[4:],    # named like IDX, bad magic
    }
    for name, payload in cases.items():
        path = _write(tmp_path / name, payload)
        with pytest.raises(ValueError) as err:
            io.read_table(path)
        assert str(path) in _one_line(err), name
    gz = write_images(tmp_path / "cut-images-idx3-ubyte.gz", pixels)
    cut = tmp_path / "cut2-images-idx3-ubyte.gz"
    cut.write_bytes(gz.read_bytes()[:-12])                                            # truncated gzip stream
    with pytest.raises(ValueError, match="gzip") as err:
        io.read_table(cut)
    assert str(cut) in _one_line(err)
    labels = write_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", digits)
    with pytest.raises(ValueError, match="labels file") as err:                       # labels given as the data
        io.read_table(labels)
    assert str(labels) in _one_line(err)


def test_load_data_reads_idx(tmp_path, pixels, digits, capsys):
    images = write_images(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    write_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", digits)
    args = argparse.Namespace(data=str(images), n=None, columns=None, label_column=None, key=None,
                              drop_missing=False, quiet=False, dataset="three-clusters", seed=0)
    x, labels, record = load_data(args)
    np.testing.assert_array_equal(x, pixels.reshape(N, -1))
    np.testing.assert_array_equal(labels, [str(d) for d in digits])
    assert record["source"] == "file" and record["label_column"] == "t10k-labels-idx1-ubyte.gz"
    assert record["rows_in_file"] == N and len(record["columns"]) == ROWS * COLS
    assert "sibling" in capsys.readouterr().err


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="MNIST IDX files not available")
def test_real_mnist_test_set():
    t = io.read_table(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    assert t.x.shape == (10000, 784) and t.x.dtype == np.float64
    assert t.x.min() == 0 and t.x.max() == 255
    assert t.label_name == "t10k-labels-idx1-ubyte.gz"
    assert sorted(set(t.labels.tolist())) == [str(d) for d in range(10)]
