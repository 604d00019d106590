"""notebooks/figure1.ipynb runs top to bottom (small setting, about half a minute)."""

import pytest
from _notebook import png_count, run_notebook


# over a minute on 2 CPU cores: behind `slow`; tests/test_notebooks_static.py checks its API use in every run
@pytest.mark.slow
def test_figure1_notebook_executes(monkeypatch):
    outputs, text, _ = run_notebook("figure1.ipynb", monkeypatch, timeout=300, mpl_backend="Agg")
    assert "purity" in text and "I(i; z)" in text
    assert png_count(outputs) >= 1
