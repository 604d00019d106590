"""Reading user data tables (``vaefp_jax.io``): scikit-learn's files, iris written out in the
usual CSV dialects, the errors, .npy / .npz labels, and ``load_points`` as before.

Expectations come from scikit-learn's loaders and from arrays written by the tests themselves.
"""

import hashlib
import os
import pathlib

import numpy as np
import pytest
import sklearn.datasets

from vaefp_jax import io

IRIS = sklearn.datasets.load_iris()
IRIS_NAMES = list(IRIS.feature_names)                       # 'sepal length (cm)', …
IRIS_LABELS = np.array(IRIS.target_names)[IRIS.target]


def sklearn_file(name):
    return os.path.join(os.path.dirname(sklearn.datasets.__file__), "data", name)


def one_line_error(match, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        io.read_table(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for word in match:
        assert word in msg, (word, msg)
    return msg


def iris_rows(delimiter=",", decimal=".", quote_species=False, quote_numbers=False):
    def num(v):
        s = repr(float(v)).replace(".", decimal)
        return f'"{s}"' if quote_numbers else s
    def species(s):
        return f'"Iris {s}"' if quote_species else s
    return [delimiter.join([num(v) for v in row] + [species(lab)]) for row, lab in zip(IRIS.data, IRIS_LABELS)]


def write_iris(tmp_path, name="iris.csv", delimiter=",", header=True, bom=False, **kw):
    lines = ([delimiter.join(IRIS_NAMES + ["species"])] if header else []) + iris_rows(delimiter, **kw)
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("\n".join(lines) + "\n").encode())
    return path


# -- scikit-learn's bundled files ---------------------------------------------------------------

@pytest.mark.parametrize("name, loader, d", [("iris.csv", sklearn.datasets.load_iris, 4),
                                              ("wine_data.csv", sklearn.datasets.load_wine, 13)])
def test_sklearn_bundled_files(name, loader, d):
    ref = loader()
    path = sklearn_file(name)
    t = io.read_table(path)
    assert t.x.shape == (len(ref.target), d) and t.x.dtype == np.float64
    np.testing.assert_allclose(t.x, ref.data, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(t.labels, np.array(ref.target_names)[ref.target])
    assert t.columns == tuple(str(j) for j in range(d)) and t.label_name == str(d)
    assert any("scikit-learn" in n for n in t.notes)
    assert t.sha256 == hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() and t.path == path
    np.testing.assert_array_equal(io.load_points(path), t.x)   # the label is not read as a feature


def test_sklearn_file_with_columns_and_label_overrides():
    path = sklearn_file("iris.csv")
    t = io.read_table(path, columns="0,2")                        # the class stays the label
    np.testing.assert_allclose(t.x, IRIS.data[:, [0, 2]], atol=1e-12)
    np.testing.assert_array_equal(t.labels, IRIS_LABELS)
    t = io.read_table(path, columns=[0, 1, 2, 3, 4])              # the codes taken as a feature
    np.testing.assert_allclose(t.x[:, 4], IRIS.target)
    assert t.labels is None
    t = io.read_table(path, label_column=0)
    np.testing.assert_allclose(t.x, np.c_[IRIS.data[:, 1:], IRIS.target], atol=1e-12)
    assert t.labels[0] == "5.1" and t.label_name == "0"


# -- iris written out as CSV in several dialects -------------------------------------------------

def test_text_column_is_an_error_by_default(tmp_path):
    path = write_iris(tmp_path)
    msg = one_line_error(["iris.csv", "'species'", "index 4", "line 2", "setosa", "--label-column species",
                          "--columns"], path)
    assert "not numeric" in msg
    with pytest.raises(ValueError, match="species"):
        io.load_points(path)


def test_header_with_label_column(tmp_path):
    path = write_iris(tmp_path)
    for label in ("species", 4, "4"):
        t = io.read_table(path, label_column=label)
        np.testing.assert_allclose(t.x, IRIS.data, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(t.labels, IRIS_LABELS)
        assert t.columns == tuple(IRIS_NAMES) and t.label_name == "species"
    assert any("header" in n for n in t.notes)


def test_header_with_numeric_columns_selected(tmp_path):
    path = write_iris(tmp_path)
    t = io.read_table(path, columns=IRIS_NAMES)
    np.testing.assert_allclose(t.x, IRIS.data, rtol=0, atol=1e-12)
    assert t.labels is None and t.label_name is None and t.columns == tuple(IRIS_NAMES)
    t = io.read_table(path, columns=[IRIS_NAMES[2], 0], label_column="species")
    np.testing.assert_allclose(t.x, IRIS.data[:, [2, 0]], atol=1e-12)
    assert t.columns == (IRIS_NAMES[2], IRIS_NAMES[0])
    t = io.read_table(path, columns="petal width (cm),1")       # the CLI's comma-separated form
    np.testing.assert_allclose(t.x, IRIS.data[:, [3, 1]], atol=1e-12)


@pytest.mark.parametrize("dialect", ["bom", "semicolon_decimal_comma", "tab", "quoted", "whitespace"])
def test_dialects(tmp_path, dialect):
    kw = {"bom": {"bom": True},
          "semicolon_decimal_comma": {"delimiter": ";", "decimal": ","},
          "tab": {"name": "iris.tsv", "delimiter": "\t"},
          "quoted": {"quote_species": True, "quote_numbers": True},
          "whitespace": {"name": "iris.txt", "delimiter": "  ", "header": False}}[dialect]
    path = write_iris(tmp_path, **kw)
    label = 4 if dialect == "whitespace" else "species"
    t = io.read_table(path, label_column=label)
    np.testing.assert_allclose(t.x, IRIS.data, rtol=0, atol=1e-12)
    expected = np.char.add("Iris ", IRIS_LABELS) if dialect == "quoted" else IRIS_LABELS
    np.testing.assert_array_equal(t.labels, expected)
    assert t.columns == (("0", "1", "2", "3") if dialect == "whitespace" else tuple(IRIS_NAMES))
    if dialect == "bom":
        assert t.columns[0] == "sepal length (cm)"             # no '\ufeff' glued to the first name
    if dialect == "semicolon_decimal_comma":
        assert any("decimal comma" in n for n in t.notes)


def test_quoted_decimal_comma_with_semicolons_and_comments(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text('# exported\n"a";"b"\n\n"1,5";2\n# note\n-0,25;"3,0"\n')
    t = io.read_table(path)
    np.testing.assert_array_equal(t.x, [[1.5, 2.0], [-0.25, 3.0]])
    assert t.columns == ("a", "b")


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    ("a,b\n1,2\n3,4,5\n", ["line 3", "3 fields", "2", "different numbers of columns"]),
    ("a,b\n1,2\n3,\n", ["line 3", "'b'", "index 1", "missing"]),
    ("a,b\n1,NA\n3,4\n", ["line 2", "'b'", "index 1", "'NA'"]),
    ("a,b\n1,2\n3,inf\n", ["line 3", "'b'", "inf"]),
    ("a,b,c\n", ["line 1", "header", "no data rows"]),
    ("# only a comment\n\n", ["empty"]),
    ("a,a\n1,2\n", ["'a'", "twice"]),
])
def test_text_errors(tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    one_line_error(["bad.csv"] + words, path)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\n1,2\n3,é\n".encode("latin-1"))
    one_line_error(["latin1.csv", "UTF-8", "line 3"], path)


def test_file_and_selection_errors(tmp_path):
    one_line_error(["nope.csv", "does not exist"], tmp_path / "nope.csv")
    (tmp_path / "pts.json").write_text("[1, 2]")
    one_line_error(["pts.json", "unsupported", ".json"], tmp_path / "pts.json")
    path = write_iris(tmp_path)
    one_line_error(["iris.csv", "'petal size'", "no column"], path, columns=["petal size"], label_column=4)
    one_line_error(["iris.csv", "'species'", "index 4", "both the label column and in columns"], path,
                   columns=["species", 0], label_column="species")
    one_line_error(["iris.csv", IRIS_NAMES[1], "index 1", "both"], path, columns=[0, 1], label_column=1)
    one_line_error(["iris.csv", "index 9", "out of range"], path, label_column=9)
    one_line_error(["iris.csv", "no columns"], path, columns=[], label_column=4)
    (tmp_path / "one.csv").write_text("a\n1\n2\n")
    one_line_error(["one.csv", "no columns"], tmp_path / "one.csv", label_column="a")


def test_only_selected_columns_need_numbers(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("id,x,y,note\nA,1,2,ok\nB,3,NA,text here\n")
    t = io.read_table(path, columns=["x"])
    np.testing.assert_array_equal(t.x, [[1.0], [3.0]])
    one_line_error(["mixed.csv", "'y'", "index 2", "line 3"], path, columns="x,y")


# -- .npy / .npz ---------------------------------------------------------------------------------

def test_npy_with_label_column_index(tmp_path):
    arr = np.c_[IRIS.data, IRIS.target.astype(np.float64)]
    np.save(tmp_path / "iris.npy", arr)
    t = io.read_table(tmp_path / "iris.npy", label_column=4)
    np.testing.assert_array_equal(t.x, IRIS.data)
    np.testing.assert_array_equal(t.labels, IRIS.target.astype(str))   # "0", not "0.0"
    assert t.columns == ("0", "1", "2", "3") and t.label_name == "4"
    t = io.read_table(tmp_path / "iris.npy", columns=[3, "1"])
    np.testing.assert_array_equal(t.x, arr[:, [3, 1]])
    assert t.labels is None
    arr[5, 2] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    one_line_error(["nan.npy", "NaN", "row 5", "column 2"], tmp_path / "nan.npy")
    np.testing.assert_array_equal(io.read_table(tmp_path / "nan.npy", columns=[0, 1]).x, arr[:, :2])


def test_npz_with_label_array(tmp_path):
    np.savez(tmp_path / "iris.npz", x=IRIS.data, y=IRIS.target)
    t = io.read_table(tmp_path / "iris.npz", label_column="y")
    np.testing.assert_array_equal(t.x, IRIS.data)
    np.testing.assert_array_equal(t.labels, IRIS.target.astype(str))
    assert t.label_name == "y"
    np.savez(tmp_path / "named.npz", points=IRIS.data, y=IRIS_LABELS)   # the only array besides y
    t = io.read_table(tmp_path / "named.npz", label_column="y")
    np.testing.assert_array_equal(t.x, IRIS.data)
    np.testing.assert_array_equal(t.labels, IRIS_LABELS)
    np.savez(tmp_path / "short.npz", x=IRIS.data, y=IRIS.target[:10])
    one_line_error(["short.npz", "'y'", "(150,)"], tmp_path / "short.npz", label_column="y")
    one_line_error(["iris.npz", "'z'", "arrays"], tmp_path / "iris.npz", label_column="z")


# -- load_points as before -----------------------------------------------------------------------

@pytest.mark.parametrize("header", [True, False])
def test_load_points_plain_numeric_csv(tmp_path, header):
    x = np.random.default_rng(1).normal(size=(7, 3))
    path = tmp_path / "pts.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c" if header else "", comments="")
    np.testing.assert_array_equal(io.load_points(path), x)      # repr-exact text round trip
    t = io.read_table(path)
    assert t.columns == (("a", "b", "c") if header else ("0", "1", "2")) and t.labels is None
