"""``Accelerated`` on cooling sweeps of standardised real data: the stability certificate with a
fixed 48-step Lanczos bound (as before issue 33) against the one that enlarges its Krylov space
(2×, 4×) before calling a point unstable, in the same run.

    python benchmarks/accelerated_certificate.py --sets diabetes wine --k 8 --num-betas 16 --low 0.1

Prints, per data set and certificate: wall time (compilation included: each certificate is a
fresh program), the β that did not end CONVERGED (β/λ_max, status, ρ), the largest ρ, and the
map evaluations of the whole sweep.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402

import vaefp_jax as vf  # noqa: E402
from vaefp_jax import operators, tile_jacobian  # noqa: E402
from vaefp_jax.iterations import accelerated  # noqa: E402

ENLARGED = accelerated.leading_eig


def fixed_48(problem, psi, num_iter, key, method, threshold=1.0):
    """The certificate before issue 33: one estimate of ``num_iter`` steps, whatever it says."""
    factors = tile_jacobian.jacobian_factors(psi, problem.x, problem.beta, problem.log_prior)
    return operators.SPECTRAL[method](factors, psi, num_iter, key)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["diabetes", "wine"])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--num-betas", type=int, default=16)
    p.add_argument("--low", type=float, default=0.1, help="smallest β / λ_max (the largest is 3 λ_max)")
    args = p.parse_args()
    print(f"{'data':>9} {'n':>4} {'d':>3} {'certificate':>12} {'s':>6} {'evaluations':>11} {'max ρ':>9}  not converged")
    for name in args.sets:
        x = getattr(datasets, f"load_{name}")().data
        x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
        lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
        betas = np.geomspace(args.low * lam, 3 * lam, args.num_betas)
        for label, estimate in (("fixed 48", fixed_48), ("enlarged", ENLARGED)):
            accelerated.leading_eig = estimate
            jax.clear_caches()
            t0 = time.perf_counter()
            sw = vf.sweep(x, betas, vf.LatentGrid.uniform(args.k), iteration=vf.Accelerated(),
                          continuation="cooling", throw=False)
            seconds = time.perf_counter() - t0
            rho = np.asarray(sw.solution.stats["spectral_radius"])
            bad = [f"{betas[j] / lam:.3f} ({vf.Status(int(sw.status[j])).name}, ρ = {rho[j]:.5f})"
                   for j in np.nonzero(sw.status != 0)[0]]
            print(f"{name:>9} {x.shape[0]:>4} {x.shape[1]:>3} {label:>12} {seconds:6.0f} {int(np.sum(sw.steps)):>11} "
                  f"{rho.max():9.6f}  {', '.join(bad) or '—'}", flush=True)
    accelerated.leading_eig = ENLARGED


if __name__ == "__main__":
    main()
