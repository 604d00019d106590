"""Benchmark: critical slowing down, plain iteration vs the accelerated iteration.

    python benchmarks/critical.py [--n 200] [--k 8]

Gaussian blob (β_c = λ_max of its (1/n) covariance), β at 0.5, 0.9, 0.95, 0.99,
1.01, 1.05, 1.1 × β_c, float64, tolerance 1e-10 on ‖F(ψ) − ψ‖. Each β is solved
alone (B = 1) by both iterations, ``Damped(damping=0, tol=1e-10)`` and
``Accelerated()``, from the same grid initialisation, so wall times
are per β (best of ``--repeats``, compilation excluded). Reports map
evaluations, wall time, ρ at the answer, whether both reached the same fixed
points (max |Δψ| after matching tiles, and |Δu|).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import vaefp_jax as vf  # noqa: E402
from vaefp_jax import operators, tile_jacobian  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from sweep import best_time, cpu_name  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    x = vf.datasets.gaussian_blob(args.n, seed=0)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(args.k)
    lp = jnp.asarray(grid.log_prior)
    proto = vf.Damped(damping=0.0, tol=1e-10, max_steps=200_000)
    print(f"# {time.strftime('%Y-%m-%d')}  {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"CPU: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}; float64")
    print(f"# Gaussian blob n={args.n}, {args.k}x{args.k} uniform grid, beta_c = lambda_max = {lam:.5g}, tol 1e-10")
    print("| beta/beta_c | plain evals | plain time (s) | accel. evals | accel. time (s) | evals ratio | "
          "time ratio | rho (plain / accel.) | max dpsi | du |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for f in (0.5, 0.9, 0.95, 0.99, 1.01, 1.05, 1.1):
        b = np.array([f * lam])
        plain = lambda: vf.solve(x, b, grid, iteration=proto, throw=False)
        acc = lambda: vf.solve(x, b, grid, iteration=vf.Accelerated())
        jax.block_until_ready(plain().psi)
        jax.block_until_ready(acc().psi)
        tp, rp = best_time(lambda: plain(), args.repeats)
        ta, ra = best_time(lambda: acc(), args.repeats)
        rho_p = float(operators.power_iteration(
            tile_jacobian.jacobian_factors(rp.psi[0], jnp.asarray(x), b[0], lp), rp.psi[0], 1000)[0])
        up = float(vf.order_parameter(rp.psi[0], x, b[0], grid.log_prior))
        ua = float(vf.order_parameter(ra.psi[0], x, b[0], grid.log_prior))
        dpsi = float(np.max(np.abs(np.sort(np.asarray(rp.psi[0]), axis=0) - np.sort(np.asarray(ra.psi[0]), axis=0))))
        ep, ea = int(rp.steps[0]), int(ra.steps[0])
        print(f"| {f:.2f} | {ep} | {tp:.3f} | {ea} | {ta:.3f} | {ep / ea:.1f}x | {tp / ta:.1f}x | "
              f"{rho_p:.4f} / {float(ra.stats['spectral_radius'][0]):.4f} | {dpsi:.1e} | {abs(up - ua):.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
