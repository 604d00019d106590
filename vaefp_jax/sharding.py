r"""β sweeps split across devices: a 1-D device mesh over the β axis.

:func:`solve_sharded` pads the β batch to a multiple of the number of devices,
places β (and per-β initial ψ) on a 1-D mesh with ``NamedSharding(mesh,
P("beta"))`` and the data, prior and a shared initial ψ replicated, and runs
:func:`vaefp_jax.solve` (or another solver with its signature, e.g.
:func:`vaefp_jax.streaming.solve_streamed`) on each device's shard under
``jax.jit(jax.shard_map(...))``. The β are independent problems, so the
shards never communicate: each device iterates its own β and stops when they
have converged, with no collective inside the loop. The padding (copies of the
last β) is dropped from the result, which therefore equals the one-device
``solve`` β by β (the same arithmetic on each β; only the vmap width differs).

Multi-host (multi-controller JAX). Call ``jax.distributed.initialize()`` in
every process, then make the *same* ``solve_sharded(x, betas, grid, ...)`` call
in every process, each passing the *full* ``x`` and ``betas`` (they are small:
B numbers and n × d points). What this module does for that case:

* the mesh is built over ``jax.devices()``, i.e. all devices of all processes;
* each input becomes a global ``jax.Array`` by
  ``jax.make_array_from_callback(shape, sharding, lambda idx: host[idx])``: a
  process only copies the slices of the full host array that its own
  (addressable) devices hold, so no process needs more than its share on device;
* the output is sharded over all processes; when it is not fully addressable
  it is gathered with ``jax.experimental.multihost_utils.process_allgather`` so
  that every process receives the whole (B, …) result as NumPy arrays.

Feeding only each process's own β shard (``jax.make_array_from_process_local_data``)
is not implemented: pass the full β array. Tested on CPU: one process with 4
virtual devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``) and two
processes × 2 devices on one machine (``jax.distributed.initialize`` with a
local coordinator and ``jax_cpu_collectives_implementation="gloo"`` for the
gather), tests/test_sharding.py. Not tested: several machines, real accelerators.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from vaefp_jax import _validate
from vaefp_jax.grid import LatentGrid
from vaefp_jax.solver import Protocol, SolveResult, check_initial, initial_psi, solve

__all__ = ["BETA_AXIS", "beta_mesh", "padded_size", "solve_sharded"]

BETA_AXIS = "beta"
_ARRAY_KWARGS = ("psi0", "key")


def beta_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``"beta"`` over ``devices`` (default: all devices of
    all processes, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices is empty")
    if len(set(devices)) != len(devices):
        raise ValueError("devices contains a device more than once")
    return jax.make_mesh((len(devices),), (BETA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def padded_size(num_betas: int, num_devices: int) -> int:
    """The smallest multiple of ``num_devices`` that is ≥ ``num_betas``."""
    return math.ceil(num_betas / num_devices) * num_devices


def _pad_edge(a: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading axis to ``size`` with copies of the last entry (a valid
    β / ψ, so the padding converges like its neighbour and is cheap)."""
    extra = size - a.shape[0]
    return a if extra == 0 else np.concatenate([a, np.repeat(a[-1:], extra, axis=0)], axis=0)


def _global_array(host: np.ndarray, mesh, spec: P) -> jax.Array:
    """A global array on ``mesh`` from the full host value, which every process
    holds; each process copies only the slices its own devices hold."""
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


@functools.lru_cache(maxsize=32)
def _sharded_solver(mesh, grid: LatentGrid, solver: Callable, psi_spec: P, options: tuple):
    """jit(shard_map(solver)) over (x replicated, betas sharded, psi0 ``psi_spec``)."""
    kwargs = dict(options)

    def local(x, betas, psi0):
        return solver(x, betas, grid, psi0=psi0, warn=False, **kwargs)

    return jax.jit(jax.shard_map(
        local, mesh=mesh,
        in_specs=(P(), P(BETA_AXIS), psi_spec),
        out_specs=P(BETA_AXIS),  # a prefix for every leaf of SolveResult: all lead with B
        check_vma=False,
    ))


def _to_host(result: SolveResult) -> SolveResult:
    """Every process gets the full result when the output spans several processes."""
    if result.psi.is_fully_addressable:
        return result
    from jax.experimental import multihost_utils  # multi-process only

    return jax.tree.map(lambda a: multihost_utils.process_allgather(a, tiled=True), result)


def solve_sharded(
    x,
    betas,
    grid: LatentGrid,
    *,
    devices: Sequence[jax.Device] | None = None,
    solver: Callable[..., SolveResult] = solve,
    **solve_kwargs,
) -> SolveResult:
    """:func:`vaefp_jax.solve` with the β batch split across ``devices``.

    Args:
      x: (n, d) data, the full array in every process (replicated on the mesh).
      betas: (B,) β > 0, the full array in every process; B need not be a
        multiple of the device count (padded with the last β, then dropped).
      grid: the tile basis.
      devices: the devices of the 1-D mesh; default ``jax.devices()``.
      solver: the per-shard solver, ``solve`` or one with its signature and
        result, e.g. :func:`vaefp_jax.streaming.solve_streamed`.
      **solve_kwargs: passed to ``solver``: ``psi0`` ((K, d) replicated or
        (B, K, d) sharded), ``key`` (used here to build the initial ψ once for all
        shards), ``warn`` (applied to the gathered result), and hashable options
        (``protocol``, ``damping``, ``tol``, ``max_steps``, ``record_every``,
        ``batch_size`` — per device —, ``tile_chunk``, …).

    Returns:
      :class:`~vaefp_jax.solver.SolveResult` with ``psi`` (B, K, d) etc.; its
      arrays stay sharded over the mesh in a single process (NumPy arrays,
      gathered, with several processes).
    """
    _validate.check_data(x)
    _validate.check_beta(betas, name="betas", batched=True)
    _validate.check_log_prior(grid.log_prior)
    mesh = beta_mesh(devices)
    warn = solve_kwargs.pop("warn", True)
    psi0, key = solve_kwargs.pop("psi0", None), solve_kwargs.pop("key", None)
    try:
        options = tuple(sorted(solve_kwargs.items()))
        hash(options)
    except TypeError as err:
        raise ValueError(f"solve_sharded: options other than {_ARRAY_KWARGS} must be hashable "
                         f"(got {sorted(solve_kwargs)})") from err

    x_host = np.asarray(x)
    dtype = x_host.dtype if np.issubdtype(x_host.dtype, np.floating) else np.dtype(np.float32)
    dtype = jax.dtypes.canonicalize_dtype(dtype)  # float64 → float32 unless x64 is enabled
    x_host = x_host.astype(dtype)
    betas_host = np.asarray(betas, dtype)
    B, K = betas_host.shape[0], grid.num_tiles
    if psi0 is None:
        noise = (solve_kwargs.get("protocol") or Protocol.paper()).init_noise
        psi0 = initial_psi(x_host, grid, noise, key)
    else:  # kept (K, d) when shared: no (B, K, d) copy on the host
        check_initial(psi0, x_host, K, B)
    psi0_host = np.asarray(psi0, dtype)

    size = padded_size(B, mesh.size)
    per_beta_psi = psi0_host.ndim == 3
    psi_spec = P(BETA_AXIS) if per_beta_psi else P()
    args = (
        _global_array(x_host, mesh, P()),
        _global_array(_pad_edge(betas_host, size), mesh, P(BETA_AXIS)),
        _global_array(_pad_edge(psi0_host, size) if per_beta_psi else psi0_host, mesh, psi_spec),
    )
    result = _sharded_solver(mesh, grid, solver, psi_spec, options)(*args)
    result = _to_host(result)
    if size != B:
        result = jax.tree.map(lambda a: a[:B], result)
    if warn:
        result.warn_if_not_converged(stacklevel=2)
    return result
