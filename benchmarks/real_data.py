"""Phase detection on real data sets of any dimension: wall time and the last merge.

For each data set (standardised per column, constant columns dropped): a cooling
sweep (``continuation="cooling"``) with implicit derivatives u, u', u'' in
float64 on a uniform tile grid, its largest critical β against λ_max of the
(1/n) covariance, and the refined β_c. Prints one Markdown row per data set.

    python benchmarks/real_data.py                 # the regression-suite settings
    python benchmarks/real_data.py --wine-issue    # issue 13's wine case: 12×12 grid, 48 β in [0.01, 3]·λ_max

Needs scikit-learn (the bundled data sets; no download).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from real_data import REAL_DATA, analyse, load  # noqa: E402  (tests/real_data.py: one definition of the suite)
from sweep import cpu_description  # noqa: E402  (benchmarks/sweep.py)

import vaefp_jax as vf  # noqa: E402


def wine_issue() -> None:
    """Issue 13's case, which hung in the derivative pass before vaefp_jax.linalg:
    the phase sweep (cooling, with derivatives), then the forward solves alone by
    the accelerated iteration (``solve(..., iteration=Accelerated())``, independent β),
    each timed once, compilation included."""
    x = load("wine")
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    betas = np.geomspace(0.01 * lam, 3 * lam, 48)
    grid = vf.LatentGrid.uniform(12)
    t0 = time.perf_counter()
    sw = vf.sweep(x, betas, grid, continuation="cooling", throw=False)
    t_sweep = time.perf_counter() - t0
    print(f"| wine (issue 13): sweep, cooling, u u' u'' ρ | {x.shape[0]} | {x.shape[1]} | 12×12 | 48 | {t_sweep:.1f} | "
          f"yes | {int(sw.converged.sum())}/48 | – | – |", flush=True)
    t0 = time.perf_counter()
    acc = vf.solve(x, betas, grid, iteration=vf.Accelerated())
    jax.block_until_ready(acc.psi)
    t = time.perf_counter() - t0
    print(f"| wine (issue 13): solve, Accelerated, independent β, forward only (compile included) | {x.shape[0]} | "
          f"{x.shape[1]} | 12×12 | 48 | {t:.1f} | no | {int(np.asarray(acc.converged).sum())}/48 | – | – |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wine-issue", action="store_true")
    p.add_argument("--only", nargs="*", default=None)
    args = p.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_description()}, jax {jax.__version__}, float64")
    print("| data | n | d | grid | β | sweep s | derivatives incl. | converged | last peak / λ_max | refined / λ_max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    if args.wine_issue:
        wine_issue()
        return
    for name in (args.only or REAL_DATA):
        r = analyse(name)
        print(f"| {name} | {r['n']} | {r['d']} | {r['side']}×{r['side']} | {r['num_betas']} | "
              f"{r['seconds']:.1f} | yes | "
              f"{r['converged']}/{r['num_betas']} | {r['last_peak'] / r['lam']:.3f} | {r['refined'] / r['lam']:.5f} |",
              flush=True)


if __name__ == "__main__":
    main()
