"""notebooks/figure4.ipynb runs top to bottom (small setting)."""

from _notebook import png_count, run_notebook


def test_figure4_notebook_executes(monkeypatch):
    outputs, text, _ = run_notebook("figure4.ipynb", monkeypatch, timeout=300)
    assert "corrected P: min entry" in text and "neighbour spread" in text and "max violation" in text
    assert "converged False" not in text
    assert png_count(outputs) >= 1
