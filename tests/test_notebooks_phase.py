"""notebooks/figure3.ipynb runs top to bottom (small setting)."""

from _notebook import png_count, run_notebook


def test_figure3_notebook_executes(monkeypatch):
    outputs, text, _ = run_notebook("figure3.ipynb", monkeypatch)
    assert "β_c ≈" in text and "λ_max" in text
    assert png_count(outputs) >= 2
