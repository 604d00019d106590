"""Run a notebook of notebooks/ top to bottom, as the notebook tests do."""

import pathlib
import time

import nbclient
import nbformat

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, monkeypatch, *, timeout: int = 600, mpl_backend: str | None = None):
    """Execute ``notebooks/<name>`` in a python3 kernel and check that no cell
    raised. ``mpl_backend`` None: the kernel's inline backend (figures become PNG
    outputs). Returns (outputs of all code cells, their stream text, seconds)."""
    if mpl_backend is None:
        monkeypatch.delenv("MPLBACKEND", raising=False)
    else:
        monkeypatch.setenv("MPLBACKEND", mpl_backend)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    elapsed = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not any(o.output_type == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return outputs, text, elapsed


def png_count(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)
