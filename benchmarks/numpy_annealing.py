"""Mass-constrained deterministic annealing (Rose 1998) in plain float64 NumPy: the baseline.

The textbook algorithm, written to be fast in NumPy, not a strawman: the baseline that the
package's JAX split tree (``vaefp_jax.phase.annealing``, issue 34) is compared against. Its
target is issue 34's case: scikit-learn's digits, raw pixels (n = 1797, d = 64), down to 64
clusters.

The model (T = 2β), clusters a = 1..m with centres ψ_a and masses γ_a:

    p(a|i) = γ_a exp(−‖x_i − ψ_a‖²/2β) / Σ_b γ_b exp(−‖x_i − ψ_b‖²/2β)
    ψ_a ← Σ_i p(a|i) x_i / Σ_i p(a|i),      γ_a ← (1/n) Σ_i p(a|i)

Cluster a is unstable (splits) when β < λ_max(C_a), C_a = Σ_i p(i|a)(x_i − ψ_a)(x_i − ψ_a)ᵀ,
p(i|a) = p(a|i)/Σ_j p(a|j).

The algorithm: one cluster at the mean, β0 = λ_max(Cov x) (population covariance: the first
split exactly); cool on the fixed grid β_k = β0 · cooling^k. At every β: plain EM steps (no
acceleration) until max|Δψ| + max|Δγ| < tol (default 1e-8 × the RMS spread √tr Cov of the
data) or ``max_steps``; then λ_max(C_a) of every cluster (``np.linalg.eigvalsh`` on the
stacked C_a for d ≤ 256; above that ``power_steps`` power-iteration steps with
C_a v = Σ_i p(i|a) r_i (r_i·v), C_a never formed) and every cluster with λ_max(C_a) > β is
split into two half-mass copies at ψ_a ± δ v (v the top eigenvector, δ = 1e-2 √λ_max); after
EM at the next β, copies closer than 1e-3 × the RMS spread are merged back (they did not
split) and the rest are recorded as splits at the β where they were detected. It stops when
m ≥ max_clusters (at most max_clusters − m of the most unstable clusters are split at one β, so
m ends at max_clusters exactly) or β < beta_min.

Implementation: x is centred on its mean; squared distances by the expanded form
‖x‖² − 2 x·ψ + ‖ψ‖² with one BLAS matmul per step, the row constant ‖x_i‖² dropped (it
cancels in p(a|i)); posteriors by a max-shifted log-sum-exp; the M step is a second matmul.
The command line limits BLAS to one thread by default (``--blas-threads``): on the 2-core
machine of issue 34 a digits step with m = 64 took 1.0 ms on one OpenBLAS thread against
2.5 ms on two (the matmuls are too small to share; idle machine).

Resolution limits: a split is detected at the first grid β below its true β_c, so β_c is
known only to within the cooling factor (detected/true in (cooling, 1]; the first split,
whose true β_c is β0 = λ_max(Cov), is detected at cooling · β0 since at β0 itself the single
cluster is exactly marginal). Splits whose β_c lie within one grid step of each other are
detected at the same β and made simultaneously, so their order (and the levels between them)
is not resolved. Plain EM slows down critically next to every β_c (the contraction rate → 1),
so a grid point that falls close below a β_c can cost up to ``max_steps`` steps; those β are
counted in ``unconverged``. The split criterion λ_max(C_a) > β is the single-cluster one: it
ignores the coupling between clusters, which is why a split can fall back and be merged.

    python benchmarks/numpy_annealing.py --data digits --max-clusters 64
    python benchmarks/numpy_annealing.py --data iris --max-clusters 10 [--cooling 0.95] [--standardize]
        [--blas-threads 1]

Other benchmark scripts: ``sys.path.insert(0, <benchmarks/>)``; ``from numpy_annealing import numpy_anneal``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

__all__ = ["AnnealResult", "numpy_anneal"]


@dataclasses.dataclass
class AnnealResult:
    """``splits``: (beta_detected, parent cluster index at the time of the split, m after) of
    every real split, in order; ``psi`` (m, d) in the data's coordinates and ``gamma`` (m,) at
    the last β ``beta``; ``em_steps``: all EM steps; ``n_betas``: grid points visited;
    ``unconverged``: how many EM runs hit ``max_steps``; ``merged``: splits that fell back
    together and were merged; ``snapshots``: m -> (β, ψ, γ) at the
    first β (after EM and merges) where the count of clusters was m; ``eig``: how λ_max was
    computed; ``lam0``: λ_max(Cov x)."""

    splits: list
    psi: np.ndarray
    gamma: np.ndarray
    beta: float
    em_steps: int
    n_betas: int
    unconverged: int
    merged: int
    snapshots: dict
    eig: str
    lam0: float

    def labels(self, x, m: int | None = None) -> np.ndarray:
        """(n,) argmax posterior of ``x`` at the last β, or (``m`` given) at the first level with
        at least m clusters."""
        if m is None:
            beta, psi, gamma = self.beta, self.psi, self.gamma
        else:
            ms = [k for k in sorted(self.snapshots) if k >= m]
            if not ms:
                raise ValueError(f"no level with ≥ {m} clusters (reached {max(self.snapshots)})")
            beta, psi, gamma = self.snapshots[ms[0]]
        x = np.asarray(x, np.float64)
        with np.errstate(divide="ignore"):
            logit = np.log(gamma) - ((psi * psi).sum(1) - 2.0 * (x @ psi.T)) / (2.0 * beta)
        return np.argmax(logit, axis=1)


def _posterior(x, psi, log_gamma, beta, out=None):
    """p(a|i) (n, m) by the expanded distance (‖x_i‖² dropped: constant in a) and log-sum-exp."""
    logit = np.matmul(x, psi.T, out=out)                      # x·ψ
    logit *= 1.0 / beta                                       # −(−2x·ψ)/2β
    logit += log_gamma - (psi * psi).sum(1) / (2.0 * beta)    # log γ − ‖ψ‖²/2β
    logit -= logit.max(axis=1, keepdims=True)
    np.exp(logit, out=logit)
    logit /= logit.sum(axis=1, keepdims=True)
    return logit


def _em(x, psi, gamma, beta, tol, max_steps):
    """Plain EM at β to max|Δψ| + max|Δγ| < tol: (ψ, γ, steps, converged)."""
    n = x.shape[0]
    buf = np.empty((n, psi.shape[0]))
    for step in range(1, max_steps + 1):
        with np.errstate(divide="ignore"):                    # log 0 = −inf for an emptied cluster
            log_gamma = np.log(gamma)
        p = _posterior(x, psi, log_gamma, beta, out=buf)
        mass = p.sum(0)
        new_psi = (p.T @ x) / np.maximum(mass, 1e-300)[:, None]
        new_gamma = mass / n
        delta = np.abs(new_psi - psi).max() + np.abs(new_gamma - gamma).max()
        psi, gamma = new_psi, new_gamma
        if delta < tol:
            return psi, gamma, step, True
    return psi, gamma, max_steps, False


def _critical(x, psi, gamma, beta, eigh_max_dim, power_steps, rng):
    """λ_max(C_a) (m,) and the top eigenvectors (m, d) at the current (ψ, γ)."""
    with np.errstate(divide="ignore"):
        p = _posterior(x, psi, np.log(gamma), beta)
    w = p / np.maximum(p.sum(0), 1e-300)                      # p(i|a), columns sum to 1
    m, d = psi.shape
    if d <= eigh_max_dim:
        cs = np.empty((m, d, d))
        for a in range(m):
            r = x - psi[a]
            np.matmul((r * w[:, a, None]).T, r, out=cs[a])
        lam, vec = np.linalg.eigh(cs)                         # batched; ascending
        return lam[:, -1], vec[:, :, -1]
    lam, vec = np.empty(m), np.empty((m, d))
    for a in range(m):
        r = x - psi[a]
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        for _ in range(power_steps):
            u = r.T @ (w[:, a] * (r @ v))                     # C_a v without C_a
            v = u / np.linalg.norm(u)
        lam[a] = v @ (r.T @ (w[:, a] * (r @ v)))
        vec[a] = v
    return lam, vec


def numpy_anneal(x, max_clusters=64, cooling=0.95, tol=None, max_steps=10000, beta_min=None, *,
                 eigh_max_dim=256, power_steps=300, progress=None) -> AnnealResult:
    """Mass-constrained deterministic annealing of ``x`` (n, d) down to ``max_clusters`` clusters
    or ``beta_min`` (default 1e-6 λ_max(Cov)), see the module docstring. ``progress``: called as
    ``progress(beta_detected, parent, m_after, em_steps_so_far)`` at every real split."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    mean = x.mean(0)
    x = x - mean
    n, d = x.shape
    spread = float(np.sqrt((x * x).sum() / n))               # √tr Cov
    if spread == 0:
        raise ValueError("all points are the same point: there is nothing to split")
    tol = 1e-8 * spread if tol is None else float(tol)
    merge_tol = 1e-3 * spread
    lam0 = float(np.linalg.eigvalsh(np.atleast_2d(np.cov(x.T, bias=True)))[-1])
    beta_min = 1e-6 * lam0 if beta_min is None else float(beta_min)
    rng = np.random.default_rng(0)
    eig = "eigh" if d <= eigh_max_dim else f"power iteration ({power_steps} steps)"

    psi, gamma = np.zeros((1, d)), np.ones(1)
    beta = lam0
    splits, snapshots = [], {1: (beta, psi + mean, gamma.copy())}
    em_steps = n_betas = unconverged = merged = 0
    pending = []                                              # (parent, copy, β detected)
    while True:
        psi, gamma, steps, ok = _em(x, psi, gamma, beta, tol, max_steps)
        em_steps += steps
        n_betas += 1
        unconverged += not ok
        if pending:
            real = [np.linalg.norm(psi[a] - psi[b]) >= merge_tol for a, b, _ in pending]
            for (a, b, _), r in sorted(zip(pending, real), key=lambda t: -t[0][1]):
                if not r:                                     # fell back together: merge (copies last, so from the end)
                    g = gamma[a] + gamma[b]
                    psi[a] = (gamma[a] * psi[a] + gamma[b] * psi[b]) / g
                    gamma[a] = g
                    psi, gamma = np.delete(psi, b, 0), np.delete(gamma, b)
            m_count = psi.shape[0] - int(sum(real))
            for (a, _, bd), r in zip(pending, real):          # the real splits, in detection order
                if r:
                    m_count += 1
                    splits.append((bd, a, m_count))
                    if progress is not None:
                        progress(bd, a, m_count, em_steps)
            merged += len(real) - sum(real)
            if not all(real):                                 # back onto the fixed point
                psi, gamma, steps, ok = _em(x, psi, gamma, beta, tol, max_steps)
                em_steps += steps
                unconverged += not ok
            pending = []
        m = psi.shape[0]
        if m not in snapshots:
            snapshots[m] = (beta, psi + mean, gamma.copy())
        if m >= max_clusters:
            break
        if m > 1 or beta < lam0:                              # at β0 the one cluster is exactly marginal
            lam, vec = _critical(x, psi, gamma, beta, eigh_max_dim, power_steps, rng)
            unstable = np.flatnonzero(lam > beta)
            unstable = unstable[np.argsort(-lam[unstable])][:max_clusters - m]
            if unstable.size:
                new_psi, new_gamma = [psi], [gamma]
                for j, a in enumerate(unstable):
                    shift = 1e-2 * np.sqrt(lam[a]) * vec[a]
                    gamma[a] *= 0.5
                    new_psi.append((psi[a] - shift)[None])
                    new_gamma.append(gamma[a:a + 1].copy())
                    psi[a] += shift
                    pending.append((int(a), m + j, beta))
                psi, gamma = np.concatenate(new_psi), np.concatenate(new_gamma)
        next_beta = beta * cooling
        if next_beta < beta_min:
            break
        beta = next_beta
    return AnnealResult(splits, psi + mean, gamma, beta, em_steps, n_betas, unconverged,
                        merged, snapshots, eig, lam0)


def _load(name: str, standardize: bool):
    from sklearn import datasets

    d = getattr(datasets, f"load_{name}")()
    x, y = np.asarray(d.data, np.float64), np.asarray(d.target)
    if standardize:
        std = x.std(0)
        x = (x[:, std > 0] - x[:, std > 0].mean(0)) / std[std > 0]
    return x, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", choices=["iris", "wine", "breast_cancer", "digits"])
    p.add_argument("--max-clusters", type=int, default=64)
    p.add_argument("--cooling", type=float, default=0.95)
    p.add_argument("--max-steps", type=int, default=10000)
    p.add_argument("--standardize", action="store_true", help="standardise the columns (constant ones dropped)")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads (threadpoolctl); 0: the library's own default. Default 1: the "
                        "matmuls are small (n × m × d), and one thread was the faster on 2 cores")
    args = p.parse_args()
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_info, threadpool_limits

    if args.blas_threads > 0:
        threadpool_limits(args.blas_threads, user_api="blas")
    blas = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']} thread(s)" for i in threadpool_info()
                             if i["user_api"] == "blas"}))

    x, y = _load(args.data, args.standardize)
    k = len(np.unique(y))
    print(f"{args.data} ({'standardised' if args.standardize else 'raw'}): n = {x.shape[0]}, d = {x.shape[1]}, "
          f"{k} classes, max_clusters = {args.max_clusters}, cooling = {args.cooling}; BLAS: {blas}", flush=True)
    t0 = time.perf_counter()

    def progress(beta, parent, m, steps):
        print(f"  split at β = {beta:.6g}: cluster {parent} -> m = {m}  "
              f"({steps} EM steps, {time.perf_counter() - t0:.1f} s)", flush=True)

    r = numpy_anneal(x, max_clusters=args.max_clusters, cooling=args.cooling, max_steps=args.max_steps,
                     progress=progress)
    wall = time.perf_counter() - t0
    print(f"wall time {wall:.2f} s; {r.em_steps} EM steps over {r.n_betas} β ({r.unconverged} EM runs hit max_steps); "
          f"{len(r.splits)} splits, {r.merged} merged back; {len(r.gamma)} clusters at β = {r.beta:.6g}; "
          f"λ_max by {r.eig}")
    if r.splits:
        b1 = r.splits[0][0]
        print(f"first split detected at β = {b1:.10g}; λ_max(Cov) = {r.lam0:.10g}; ratio {b1 / r.lam0:.6f}")
    if max(r.snapshots) >= k:
        m = min(mm for mm in r.snapshots if mm >= k)
        ari = adjusted_rand_score(y, r.labels(x, k))
        print(f"ARI at the first level with ≥ {k} clusters (m = {m}, β = {r.snapshots[m][0]:.6g}): {ari:.4f}")
    else:
        print(f"ARI: not reached ({max(r.snapshots)} < {k} clusters)")


if __name__ == "__main__":
    main()
