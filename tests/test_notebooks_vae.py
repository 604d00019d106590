"""notebooks/figure1.ipynb runs top to bottom (small setting, about half a minute)."""

from _notebook import png_count, run_notebook


def test_figure1_notebook_executes(monkeypatch):
    outputs, text, _ = run_notebook("figure1.ipynb", monkeypatch, timeout=300, mpl_backend="Agg")
    assert "purity" in text and "I(i; z)" in text
    assert png_count(outputs) >= 1
