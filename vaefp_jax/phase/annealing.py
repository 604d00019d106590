r"""The split tree of a data set by continuation on cooling of the reduced fixed point.

Start above λ_max(Cov) with one cluster (ψ = mean, γ = 1). On the current branch of m
distinct fixed points every cluster a has its critical temperature, a root of

    g_a(β) = λ_max(C_a(β)) − β          (:func:`vaefp_jax.phase.reduced.cluster_spectra`)

along the branch (C_a is re-solved at each trial β: the clusters move as β falls). The next
split is the largest root of G(β) = max_a ln(λ_max(C_a(β))/β) below the current β:

1. **predict**: from the stable end β_hi of the branch (G < 0), the secant of G through its
   last two values (or G's zeroth-order root, max_a λ_a(β_hi), at the first), a little below
   it, no lower than ``step`` × β_hi (continuation in steps the warm start can follow);
2. **bracket**: solve the branch there; if every cluster is still stable, that is the new
   β_hi and the prediction is repeated; else the root lies in [trial, β_hi];
3. **locate**: Brent's method (scipy) on G in ln β, the branch re-solved at each trial β from
   the nearest solved point, to ``beta_rtol``; the β_c reported is the bracket's stable end
   (all clusters stable there, λ_max(C_a) = β_c to that tolerance).

That cluster is then replaced by two half-mass copies at ψ_a ± ε v (v its splitting
direction) with ε from the pitchfork's normal form: along v, with s_i = v·(x_i − ψ_a), the
copies' distance obeys ε = E[s tanh(sε/β)] (expectations under p(i|a)), so
ε² ≈ 3β²(λ_max − β)/E[s⁴] just below β_c (for Gaussian data ε² ≈ λ_max − β). The new
branch is solved at β_c × ``split_step``; copies that fall back together are merged again
and the search goes on below. One split at a time: every level of the tree is a β interval
of its own, and level k has k + 1 clusters.

To keep one compiled program per size class, the branch is padded to the next power of two
with empty clusters (mass 0: they take no point and stay where they are).

Labels are nested by construction: at the finest level every point goes to its most probable
cluster, read where that level is settled (``read``: at the low-β end of its interval, or
just below its own split); a coarser level's cluster is the union of its descendants.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax.numpy as jnp
import numpy as np

from vaefp_jax.clusters import rms_spread
from vaefp_jax.phase.reduced import DENSE_MAX, EMPTY, cluster_spectra, solve_reduced

__all__ = ["Level", "Split", "SplitTree", "anneal", "pad_branch"]

# log γ of a padding cluster: exp underflows to exactly 0 in the posteriors, but stays finite
# so that differences of log γ (SQUAREM's extrapolation) are defined.
_EMPTY = EMPTY


@dataclasses.dataclass(frozen=True)
class Split:
    """Cluster ``parent`` (a node id) splits at ``beta`` into ``children`` (two new node ids)
    with masses ``masses`` just below, along ``direction`` (d,), the top eigenvector of C_a.
    ``condition``: λ_max(C_a)/β − 1 at β (0 to the bisection's tolerance); ``solves``: branch
    solves spent locating it; ``steps``: the reduced steps of those solves."""

    beta: float
    parent: int
    children: tuple[int, int]
    masses: tuple[float, float]
    direction: np.ndarray
    condition: float
    solves: int
    steps: int
    upper: float


@dataclasses.dataclass(frozen=True)
class Level:
    """The branch between two splits: ``beta_high`` (the split above; inf for the root) down to
    ``beta_low`` (the next split, or where the annealing stopped); ``nodes`` (m,) the node ids of
    its clusters, ``psi`` (m, d) and ``log_mass`` (m,) solved at ``beta_read``."""

    beta_high: float
    beta_low: float
    beta_read: float
    nodes: tuple[int, ...]
    psi: np.ndarray
    log_mass: np.ndarray

    @property
    def width(self) -> float:
        """ln(β_high/β_low): the level's persistence (inf for the root)."""
        return float(np.log(self.beta_high / self.beta_low))


@dataclasses.dataclass(frozen=True)
class SplitTree:
    """The splits in descending β, the levels between them (level k has k + 1 clusters,
    ``levels[0]`` the single cluster), the nested labels (L, n) of the points, why it stopped
    ("max_clusters" or "beta_min"), its wall time, the branch solves that did not converge
    within max_steps: (β, clusters, residual) each (empty when all did), and ``tol``, the
    tolerance of its branch solves."""

    splits: tuple[Split, ...]
    levels: tuple[Level, ...]
    labels: np.ndarray
    stopped: str
    seconds: float
    unconverged: tuple[tuple[float, int, float], ...] = ()
    tol: float = 0.0

    def labels_at(self, level: int) -> np.ndarray:
        """(n,) the cluster (0..k) of every point at ``level`` (k + 1 clusters)."""
        return self.labels[level]


def _capacity(m: int) -> int:
    return 1 << max(m - 1, 0).bit_length()


def pad_branch(psi, lm):
    """(ψ, log γ) padded to the next power of two with empty clusters (ψ = 0, log γ = EMPTY)."""
    m, d = psi.shape
    cap = _capacity(m)
    return (np.concatenate([psi, np.zeros((cap - m, d))]), np.concatenate([lm, np.full(cap - m, _EMPTY)]))


class _Branch:
    """Solves of the current branch (m clusters, padded) and its spectra, with counters."""

    def __init__(self, x, dtype, max_steps, tol, lanczos_iters):
        self.x, self.dtype, self.max_steps, self.tol = x, dtype, max_steps, tol
        self.iters = lanczos_iters
        self.solves = self.steps = 0
        self.unconverged = []
        self.v_last = None

    def solve(self, beta, psi, lm, check=True):
        """(ψ, log γ) of the branch at β from (ψ, log γ); with ``check=False`` also whether it
        converged. A solve that did not converge is recorded in ``unconverged`` (β, clusters,
        residual) and the annealing goes on from where it stopped: the tree says so, never
        silently."""
        m = psi.shape[0]
        pp, pl = pad_branch(psi, lm)
        r = solve_reduced(self.x, np.array([beta], self.dtype), pp.astype(self.dtype), pl.astype(self.dtype),
                          tol=self.tol, max_steps=self.max_steps)
        self.solves += 1
        self.steps += int(r.steps[0])
        ok = bool(r.converged[0])
        out = np.asarray(r.psi[0], np.float64)[:m], np.asarray(r.log_mass[0], np.float64)[:m]
        if not ok:
            self.unconverged.append((float(beta), m, float(r.residual[0])))
        return out if check else (out, ok)

    def spectra(self, beta, psi, lm, v0=None):
        """(λ_max (m,), v (m, d)) of every cluster (computed for the padded branch: one compiled
        program per size class)."""
        m, d = psi.shape
        pp, pl = pad_branch(psi, lm)
        args = (jnp.asarray(pp, self.dtype), jnp.asarray(pl, self.dtype), self.x, beta)
        if self.iters == 0:
            lam, v = cluster_spectra(*args)
            return np.asarray(lam, np.float64)[:m], np.asarray(v, np.float64)[:m]
        if v0 is None:   # warm start from the last directions of this branch (a new cluster: a flat start)
            last = self.v_last
            v0 = np.ones((m, d)) / math.sqrt(d)
            if last is not None:
                v0[:min(m, last.shape[0])] = last[:m]
        v0 = np.concatenate([v0, np.ones((pp.shape[0] - m, d)) / math.sqrt(d)])
        lam = None
        for _ in range(12):   # restarted from the Ritz vectors until λ is stable to 1e-12
            new, v0 = (np.asarray(t, np.float64) for t in
                       cluster_spectra(*args, v0=jnp.asarray(v0, self.dtype), iters=self.iters))
            if lam is not None and np.all(np.abs(new[:m] - lam[:m]) <= 1e-12 * np.abs(new[:m])):
                break
            lam = new
        self.v_last = v0[:m]
        return new[:m], v0[:m]


def _log_posterior(psi, lm, xc, beta) -> np.ndarray:
    """(n, m) log p(a|i) on the host (float64), for the read-outs."""
    d2 = np.sum(xc * xc, 1)[:, None] - 2.0 * xc @ psi.T + np.sum(psi * psi, 1)[None, :]
    logits = lm[None, :] - np.maximum(d2, 0.0) / (2.0 * beta)
    mx = logits.max(axis=1, keepdims=True)
    return logits - mx - np.log(np.sum(np.exp(logits - mx), axis=1, keepdims=True))


def anneal(x, *, max_clusters: int = 10, beta_min: float | None = None, step: float = 0.5,
           split_step: float = 0.98, beta_rtol: float = 1e-11, max_steps: int = 100_000,
           merge_tol: float | None = None, read: str = "low", progress=None, tol: float | None = None,
           lanczos_iters: int | None = None, stop=None) -> SplitTree:
    """The split tree of ``x`` (n, d) down to ``max_clusters`` clusters or ``beta_min``.

    ``step``: the lowest fraction of the current β a prediction may jump to; ``split_step``: a
    split is followed onto its branch at β_c × split_step (close below β_c, so that the copies
    follow the pitchfork rather than run to another fixed point); ``beta_rtol``: the width of
    the final bracket of each β_c in ln β; ``merge_tol``: distance under which two copies count
    as fallen back together (default 1e-3 × the data's RMS spread); ``read``: "low" or "high",
    where each level's labels are read (module docstring); ``progress``: None or
    ``progress(clusters, beta)`` after each split; ``tol``: of the branch solves (default
    1e-10 × the data's RMS spread in float64, 1e-5 × in float32); ``lanczos_iters``: Lanczos
    steps per round for λ_max (default: 0, eigh of C_a, for d ≤ 128, else 12, warm-started from
    the last directions); ``stop``: None, or ``stop(log_mass)`` after each split, on the new
    branch's log masses (m,): True ends the tree there (stopped = "stop"), before max_clusters.
    Float64 recommended (JAX x64)."""
    from scipy.optimize import brentq

    if read not in ("low", "high"):
        raise ValueError(f"read must be 'low' or 'high', got {read!r}")
    if not (0 < step < 1 and 0 < split_step < 1):
        raise ValueError(f"step and split_step must lie in (0, 1), got {step} and {split_step}")
    start = time.perf_counter()
    xs = np.asarray(x, np.float64)
    dtype = np.asarray(x).dtype if np.asarray(x).dtype in (np.float32, np.float64) else np.float64
    mean = xs.mean(axis=0)
    xc = xs - mean                                   # translation invariance: centred for the distances
    spread = rms_spread(xs)
    if not spread > 0:
        raise ValueError("all points are the same point: there is nothing to split")
    n, d = xs.shape
    merge_tol = 1e-3 * spread if merge_tol is None else float(merge_tol)
    lam0 = float(np.linalg.eigvalsh(np.atleast_2d(np.cov(xc.T, bias=True))).max())
    beta_min = 1e-6 * lam0 if beta_min is None else float(beta_min)
    iters = (0 if d <= DENSE_MAX else 12) if lanczos_iters is None else int(lanczos_iters)
    if tol is None:   # 1e-10 of the spread in float64: β_c to ~1e-10 (its error is linear in the fixed point's)
        tol = (1e-10 if dtype == np.float64 else 1e-5) * spread
    branch = _Branch(jnp.asarray(xc, dtype), dtype, int(max_steps), tol, iters)

    def G(beta, state, v0=None):
        lam, v = branch.spectra(beta, *state, v0=v0)
        a = int(np.argmax(lam))
        return math.log(lam[a] / beta), a, lam, v

    state = (np.zeros((1, d)), np.zeros(1))          # one cluster: C = Cov at every β, so β_c = λ_max(Cov)
    nodes, next_id, splits, levels = [0], 1, [], []
    level_high, read_state = np.inf, None
    beta_c, (g_c, a, lam, v) = lam0, G(lam0, state)
    cond = lam[a] / beta_c - 1.0
    upper = beta_c
    counters = (0, 0)
    stopped = ""
    while True:
        if len(nodes) >= max_clusters or beta_c <= beta_min or stopped == "stop":
            stopped = stopped if stopped == "stop" else "max_clusters" if len(nodes) >= max_clusters else "beta_min"
            low_read = (beta_c, state) if read_state is None else read_state
            levels.append(Level(level_high, beta_c, low_read[0], tuple(nodes), *low_read[1]))
            break
        # split cluster a at β_c along v, half its mass to each copy, and solve a little below
        psi, lm = (np.array(t) for t in state)
        below = beta_c * split_step
        r = (xc - psi[a]) @ v[a]
        w = np.exp(_log_posterior(psi, lm, xc, beta_c)[:, a])
        m4 = float(np.sum(w * r**4) / np.sum(w))
        amp = math.sqrt(max(3.0 * below**2 * max(lam[a] - below, 0.0) / m4, 1e-6 * lam[a])) if m4 > 0 else 1e-3
        psi = np.concatenate([psi, psi[a:a + 1] - amp * v[a]])
        psi[a] += amp * v[a]
        lm = np.concatenate([lm, lm[a:a + 1] - np.log(2.0)])
        lm[a] -= np.log(2.0)
        psi, lm = branch.solve(below, psi, lm)
        if np.linalg.norm(psi[a] - psi[-1]) < merge_tol:          # fell back together: undo, go on below
            lm[a] = np.logaddexp(lm[a], lm[-1])
            state = (np.delete(psi, -1, 0), np.delete(lm, -1))
        else:
            low_read = (beta_c, state) if read_state is None else read_state
            levels.append(Level(level_high, beta_c, low_read[0], tuple(nodes), *low_read[1]))
            children = (next_id, next_id + 1)
            splits.append(Split(beta_c, nodes[a], children, (float(np.exp(lm[a])), float(np.exp(lm[-1]))),
                                v[a].copy(), float(cond), branch.solves - counters[0], branch.steps - counters[1],
                                upper))
            counters = (branch.solves, branch.steps)
            nodes = nodes[:a] + [children[0]] + nodes[a + 1:] + [children[1]]
            next_id, level_high, state = next_id + 2, beta_c, (psi, lm)
            if progress is not None:
                progress(len(nodes), beta_c)
            if len(nodes) >= max_clusters or (stop is not None and stop(lm)):
                if len(nodes) < max_clusters:
                    stopped = "stop"
                read_state = (below, state)
                beta_c = below
                continue
        read_high = (below, state)
        # the next split: first (below, β_c] if some cluster is already unstable at `below`
        g_b, a_b, lam_b, v_b = G(below, state)
        hi, g_hi, hist = below, g_b, [(math.log(below), g_b)]
        lo = None
        if g_b >= 0:
            # a cluster is unstable on arrival: its root on the new branch lies above `below`.
            # Bracket it with a point closer to β_c (the split pair slows down towards β_c); if
            # it is unstable there too, it splits at `below`, its condition > 0 saying by how much
            up = beta_c * (1.0 - 0.25 * (1.0 - split_step))
            up_state, up_ok = branch.solve(up, *state, check=False)
            if up_ok and G(up, up_state)[0] < 0:
                hi, hi_state, lo, lo_state = up, up_state, below, state
            else:
                upper = beta_c
                beta_c = below
                g_c, a, lam, v = g_b, a_b, lam_b, v_b      # already computed at `below`
                cond = lam[a] / below - 1.0
                read_state = (below, state) if read == "low" else read_high
                continue
        if lo is None:
            hi_state, delta = state, 2e-3
            vs = v_b
            while True:
                if len(hist) >= 2:                   # secant of G in ln β through the last two values
                    (t1, g1), (t2, g2) = hist[-2], hist[-1]
                    guess = t2 - g2 * (t2 - t1) / (g2 - g1) if g2 != g1 else t2 + g2
                else:
                    guess = math.log(hi) + g_hi      # max_a λ_a(β_hi)
                trial = max(math.exp(min(guess, math.log(hi)) + math.log1p(-delta)), hi * step)
                if trial <= beta_min:
                    trial = beta_min
                t_state = branch.solve(trial, *hi_state)
                g_t, _, _, vs = G(trial, t_state, v0=vs if iters else None)
                if g_t >= 0:
                    lo, lo_state = trial, t_state
                    break
                if trial <= beta_min:
                    break
                hi, g_hi, hi_state = trial, g_t, t_state
                hist.append((math.log(trial), g_t))
                delta = min(2 * delta, 0.2)
            if lo is None:
                state = hi_state
                levels.append(Level(level_high, beta_min, beta_min, tuple(nodes), *state))
                stopped = "beta_min"
                break
        # locate: Brent on G in ln β, the branch re-solved from the nearest solved point; the
        # tightest stable (G < 0) and unstable ends seen are kept, and closed by bisection if
        # Brent's last steps did not straddle the root within beta_rtol
        solved = {hi: hi_state, lo: lo_state}
        ends = [hi, lo]

        def h(t):
            beta = math.exp(t)
            near = min(solved, key=lambda b: abs(math.log(b) - t))
            st = branch.solve(beta, *solved[near])
            solved[beta] = st
            g = G(beta, st)[0]
            if g < 0:
                ends[0] = min(ends[0], beta)
            else:
                ends[1] = max(ends[1], beta)
            return g

        if hi / lo - 1 > beta_rtol:
            brentq(h, math.log(lo), math.log(hi), xtol=beta_rtol / 4, rtol=4 * np.finfo(float).eps)
        while ends[0] / ends[1] - 1 > beta_rtol and ends[0] > ends[1]:
            h(0.5 * (math.log(ends[0]) + math.log(ends[1])))
        beta_c = upper = ends[0]
        state = solved[beta_c]
        g_c, a, lam, v = G(beta_c, state)
        cond = lam[a] / beta_c - 1.0
        read_state = (beta_c, state) if read == "low" else read_high
    labels = _nested_labels(xc, levels, splits)
    levels = [dataclasses.replace(lev, psi=lev.psi + mean) for lev in levels]
    return SplitTree(tuple(splits), tuple(levels), labels, stopped, time.perf_counter() - start,
                     tuple(branch.unconverged), float(tol))


def _nested_labels(xc, levels, splits) -> np.ndarray:
    """(L, n) labels at every level: at the finest level each point's most probable cluster (at
    its read point); every coarser level is the union of its clusters' descendants (children
    mapped to their parent, split by split, from the finest level up), so the labels nest.
    Labels are 0..c−1 over the c clusters of the level that hold a point (a fixed point can hold
    none: every point more probable elsewhere), in the order of their node ids."""
    finest = levels[-1]
    log_p = _log_posterior(finest.psi, finest.log_mass, xc, finest.beta_read)
    node_of = np.asarray(finest.nodes)[np.argmax(log_p, axis=1)]
    out = np.zeros((len(levels), xc.shape[0]), np.int64)
    for k in range(len(levels) - 1, -1, -1):
        out[k] = np.unique(node_of, return_inverse=True)[1]   # 0..c−1 over the clusters that hold points
        if k > 0:
            s = splits[k - 1]
            node_of = np.where(np.isin(node_of, s.children), s.parent, node_of)
    return out
