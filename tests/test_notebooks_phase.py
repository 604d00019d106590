"""notebooks/figure3.ipynb runs top to bottom (small setting)."""

import pytest
from _notebook import png_count, run_notebook


# over a minute on 2 CPU cores: behind `slow`; tests/test_notebooks_static.py checks its API use in every run
@pytest.mark.slow
def test_figure3_notebook_executes(monkeypatch):
    outputs, text, _ = run_notebook("figure3.ipynb", monkeypatch)
    assert "β_c ≈" in text and "λ_max" in text
    assert png_count(outputs) >= 2
