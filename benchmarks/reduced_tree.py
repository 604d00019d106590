"""The split tree of the reduced model (``vaefp_jax.phase.annealing.anneal``) on scikit-learn's
data sets: wall time to a number of clusters, the first β_c against λ_max(Cov), and the ARI of
the level with as many clusters as classes (read at the level's low-β end) against k-means
(k given, 10 restarts) and Ward on the same data, all in one run.

    python benchmarks/reduced_tree.py --sets iris wine breast_cancer digits --max-clusters 10

Float64, 2 CPU cores. Issue 34's first pieces: plain EM on the branch, no acceleration yet.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.cluster import AgglomerativeClustering, KMeans  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from vaefp_jax.phase.annealing import anneal  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["iris", "wine", "breast_cancer", "digits"])
    p.add_argument("--max-clusters", type=int, default=10)
    p.add_argument("--raw", action="store_true", help="do not standardise the columns")
    args = p.parse_args()
    print(f"{'data':>14} {'n':>5} {'d':>3} {'levels':>6} {'s':>7} {'β_c1/λ_max − 1':>15} "
          f"{'ARI tree':>8} {'k-means':>7} {'Ward':>6} {'k-means s':>9} {'Ward s':>7}")
    for name in args.sets:
        d = getattr(datasets, f"load_{name}")()
        x, y = d.data.astype(np.float64), d.target
        if not args.raw:
            std = x.std(0)
            x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
        k = len(np.unique(y))
        t0 = time.perf_counter()
        tree = anneal(x, max_clusters=max(args.max_clusters, k))
        seconds = time.perf_counter() - t0
        lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
        level = next(i for i, lev in enumerate(tree.levels) if len(lev.nodes) == k)
        ari = adjusted_rand_score(y, tree.labels(x, level))
        t0 = time.perf_counter()
        km = KMeans(k, n_init=10, random_state=0).fit_predict(x)
        t_km = time.perf_counter() - t0
        t0 = time.perf_counter()
        ward = AgglomerativeClustering(k, linkage="ward").fit_predict(x)
        t_ward = time.perf_counter() - t0
        print(f"{name:>14} {x.shape[0]:>5} {x.shape[1]:>3} {len(tree.levels):>6} {seconds:7.1f} "
              f"{tree.splits[0].beta / lam - 1:15.1e} {ari:8.3f} {adjusted_rand_score(y, km):7.3f} "
              f"{adjusted_rand_score(y, ward):6.3f} {t_km:9.2f} {t_ward:7.2f}", flush=True)


if __name__ == "__main__":
    main()
