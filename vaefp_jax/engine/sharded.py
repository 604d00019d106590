r"""The sharded schedule: the problems of a solve split across devices on a 1-D mesh.

:class:`Sharded` pads the problems to a multiple of the number of devices,
places the per-problem values (β, a constraint's strength or L, per-β initial
ψ) on a 1-D mesh with ``NamedSharding(mesh, P("beta"))`` and the data, prior, the
constraint's shared arrays and a shared initial ψ replicated, and runs its
``inner`` schedule (default: the one :func:`vaefp_jax.solve` would choose) on
each device's shard under ``jax.jit(jax.shard_map(...))``, with any iteration,
step map and constraint. The β are independent problems, so the
shards never communicate: each device iterates its own β and stops when they
have converged, with no collective inside the loop. The padding (copies of the
last β) is dropped from the result, which therefore equals the one-device
``solve`` β by β (the same arithmetic on each β; only the vmap width differs).

Multi-host (multi-controller JAX). Call ``jax.distributed.initialize()`` in
every process, then make the *same* ``solve(x, betas, grid, schedule=Sharded())`` call
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
gather), tests/test_engine_sharded.py. Not tested: several machines, real accelerators.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from vaefp_jax.engine.core import run_problems
from vaefp_jax.engine.schedules import Schedule, default_schedule

__all__ = ["BETA_AXIS", "Sharded", "beta_mesh", "padded_size"]

BETA_AXIS = "beta"


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
    problem, so the padding converges like its neighbour and is cheap)."""
    extra = size - a.shape[0]
    return a if extra == 0 else np.concatenate([a, np.repeat(a[-1:], extra, axis=0)], axis=0)


def _global_array(host: np.ndarray, mesh, spec: P) -> jax.Array:
    """A global array on ``mesh`` from the full host value, which every process
    holds; each process copies only the slices its own devices hold."""
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


@functools.lru_cache(maxsize=32)
def _sharded_runner(mesh, psi_spec: P, iteration, step_map, constraint, inner, record_every):
    def local(x, log_prior, shared, theta, psi0, key):
        return run_problems(x, log_prior, shared, theta, psi0, key, iteration=iteration, step_map=step_map,
                            constraint=constraint, schedule=inner, record_every=record_every)

    return jax.jit(jax.shard_map(
        local, mesh=mesh,
        in_specs=(P(), P(), P(), P(BETA_AXIS), psi_spec, P()),
        out_specs=P(BETA_AXIS),  # a prefix for every output: all lead with the problem axis
        check_vma=False,
    ))


def _to_host(out):
    """Every process gets the full result when the output spans several processes."""
    if out["psi"].is_fully_addressable:
        return out
    from jax.experimental import multihost_utils  # multi-process only

    return jax.tree.map(lambda a: multihost_utils.process_allgather(a, tiled=True), out)


@dataclasses.dataclass(frozen=True)
class Sharded(Schedule):
    """Split the problems over ``devices`` (default ``jax.devices()``, all processes);
    each device runs ``inner`` (default: the schedule :func:`vaefp_jax.solve` picks)
    on its shard. Pass the *full* x and betas in every process."""

    devices: tuple | None = None
    inner: Schedule | None = None

    def __post_init__(self):
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))
        if isinstance(self.inner, Sharded):
            raise ValueError("Sharded cannot be nested")

    def check(self, iteration, record_every: int) -> None:
        if self.inner is not None:
            self.inner.check(iteration, record_every)

    def execute(self, setup, psi0, key, record_every: int = 0, progress=None) -> dict:
        """Pad, place, run ``inner`` on every device, gather, drop the padding: (B, …) outputs."""
        s = setup
        inner = self.inner or default_schedule(s.iteration, s.constraint, record_every)
        mesh = beta_mesh(self.devices)
        num = s.num
        size = padded_size(num, mesh.size)
        per_beta_psi = np.ndim(psi0) == 3
        psi_spec = P(BETA_AXIS) if per_beta_psi else P()
        psi0 = np.asarray(psi0)
        rep = lambda a: _global_array(np.asarray(a), mesh, P())
        args = (rep(s.x), rep(s.log_prior), jax.tree.map(rep, s.shared),
                {k: _global_array(_pad_edge(np.asarray(v), size), mesh, P(BETA_AXIS)) for k, v in s.theta.items()},
                _global_array(_pad_edge(psi0, size) if per_beta_psi else psi0, mesh, psi_spec), rep(key))
        local_inner = inner.resolved(size // mesh.size, s.lane_shape, s.itemsize)
        out = _sharded_runner(mesh, psi_spec, s.iteration, s.step_map, s.constraint.static(), local_inner,
                              int(record_every))(*args)
        out = _to_host(out)
        return jax.tree.map(lambda a: a[:num], out) if size != num else out
