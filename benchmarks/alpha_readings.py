"""The two readings of Appendix A's "exponential smoothing with α = 0.9", measured.

``Damped.paper()`` reads it as ψ ← 0.9 F(ψ) + 0.1 ψ (α weights the new value);
``Damped.paper(alpha_on_old=True)`` as ψ ← 0.1 F(ψ) + 0.9 ψ. Both at tol 1e-3 and
400 steps (the paper's protocol) and with a 20 000-step cap, on Figure 3's
setting (120 points in three clusters, 32×32 tiles, 64 β in [1e-4, 1], float32):
wall time of ``solve`` (after compilation), converged β, total steps, and the
number of distinct fixed points where the two differ.

    python benchmarks/alpha_readings.py
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from sweep import cpu_description  # noqa: E402  (benchmarks/sweep.py)

import vaefp_jax as vf  # noqa: E402
from vaefp_jax.clusters import count_distinct, default_merge_tol  # noqa: E402


def main():
    x = vf.datasets.three_clusters(120)
    grid = vf.LatentGrid.uniform(32)
    betas = np.geomspace(1e-4, 1.0, 64)
    tol = default_merge_tol(x)
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_description()}; n = 120, K = 1024, 64 β, float32")
    print("| reading | max steps | solve s | converged | total steps | ratio of time |")
    print("|---|---|---|---|---|---|")
    found = {}
    for cap in (400, 20_000):
        times = {}
        for name, it in (("new (default)", vf.Damped.paper()), ("old", vf.Damped.paper(alpha_on_old=True))):
            it = dataclasses.replace(it, max_steps=cap)
            vf.solve(x, betas, grid, iteration=it, throw=False).psi.block_until_ready()   # compile
            t0 = time.perf_counter()
            sol = vf.solve(x, betas, grid, iteration=it, throw=False)
            sol.psi.block_until_ready()
            times[name] = time.perf_counter() - t0
            found[(name, cap)] = (np.asarray(sol.psi), np.asarray(sol.converged))
            print(f"| {name} | {cap} | {times[name]:.3f} | {int(sol.converged.sum())}/64 | "
                  f"{int(np.sum(sol.steps))} | {times[name] / times['new (default)']:.2f} |", flush=True)
    for cap in (400, 20_000):
        (pa, ca), (pb, cb) = found[("new (default)", cap)], found[("old", cap)]
        both = ca & cb
        na, nb = count_distinct(pa, tol), count_distinct(pb, tol)
        diff = np.nonzero(both & (na != nb))[0]
        shown = ", ".join(f"β = {betas[j]:.3g}: {na[j]} vs {nb[j]}" for j in diff[:6])
        print(f"\nmax steps {cap}: β converged in both readings whose number of distinct fixed points differs "
              f"(new vs old): {diff.size} of {int(both.sum())}" + (f" ({shown})" if shown else ""))


if __name__ == "__main__":
    main()
