"""Benchmark: the cost of u'' (and ρ) on top of a forward-only β sweep, same run.

    python benchmarks/derivatives.py [--k 16] [--n 120] [--betas 64 256]

For each number of β: (1) forward only, ``vaefp_jax.solve`` with an accurate
iteration (``Damped(damping=0, tol=1e-8, max_steps=5000)``, float64); (2) ``vaefp_jax.sweep`` with
u, u', u'' by implicit differentiation (Woodbury solves) and no spectral
radius; (3) the same plus ρ(∂F/∂ψ) by 100 power iterations. Wall times are the
best of ``--repeats`` after compilation. Also prints the iteration counts around
the detected β_c (critical slowing down).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import vaefp_jax as vf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from sweep import best_time, cpu_name  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--betas", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    x = vf.datasets.three_clusters(args.n)
    grid = vf.LatentGrid.uniform(args.k)
    proto = vf.Damped(damping=0.0, tol=1e-8, max_steps=5000)
    print(f"# {time.strftime('%Y-%m-%d')}  {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"CPU: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}; float64")
    print(f"# problem: n={args.n} three-cluster points, {args.k}x{args.k} grid, beta in [1e-4, 1], "
          f"tol 1e-8, <= 5000 undamped steps")
    print("| B | forward solve (s) | + u, u', u'' (s) | ratio | + rho too (s) | ratio |")
    print("|---|---|---|---|---|---|")
    last = None
    for B in args.betas:
        betas = np.geomspace(1e-4, 1.0, B)
        fwd = lambda: vf.solve(x, betas, grid, iteration=proto, throw=False).psi
        der = lambda: vf.sweep(x, betas, grid, iteration=proto, spectral_iters=0, throw=False).d2u
        rho = lambda: vf.sweep(x, betas, grid, iteration=proto, spectral_iters=100, throw=False)
        for f in (fwd, der, rho):
            jax.block_until_ready(f() if f is not rho else f().d2u)  # compile
        t_f, _ = best_time(fwd, args.repeats)
        t_d, _ = best_time(der, args.repeats)
        t_r, last = best_time(rho, args.repeats)
        print(f"| {B} | {t_f:.2f} | {t_d:.2f} | {t_d / t_f:.2f}x | {t_r:.2f} | {t_r / t_f:.2f}x |")
    res = last
    peaks = vf.critical_betas(res, top_k=3, variable="log_beta")
    order = np.argsort(res.beta)
    print("\n# iteration counts (tol 1e-8) and spectral radius around the detected beta_c:")
    print("| beta_c | beta / beta_c | steps | rho |")
    print("|---|---|---|---|")
    for p in sorted(peaks, key=lambda p: p.beta):
        pos = int(np.nonzero(order == p.index)[0][0])
        for j in order[max(pos - 3, 0): pos + 4]:
            print(f"| {p.beta:.4g} | {res.beta[j] / p.beta:.3f} | {int(res.steps[j])} | {res.spectral_radius[j]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
