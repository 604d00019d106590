"""schedule=Sharded(): the β batch split over a 1-D device mesh gives the one-device results,
with any iteration, step map and constraint.

Several devices on CPU need ``XLA_FLAGS=--xla_force_host_platform_device_count``
set before jax is imported, so the multi-device checks run in a subprocess
(float64) that prints its measurements as JSON; the assertions are here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax.engine.sharded import beta_mesh, padded_size

TESTS = os.path.dirname(os.path.abspath(__file__))
NUM_DEVICES = 4
NEAR_CRITICAL = [0.97, 0.99, 1.01, 1.03, 1.05]  # β / λ_max; β_c ≈ 1.02 λ_max for this grid

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import vaefp_jax as vf
    sys.path.insert(0, TESTS)
    from conftest import np_step

    def gap(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    out = {"devices": jax.device_count(), "x64": bool(jax.config.jax_enable_x64)}
    x = vf.datasets.gaussian_blob(200)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True)).max())
    grid = vf.LatentGrid.uniform(8)
    lp = np.asarray(grid.log_prior)
    proto = vf.Damped.tight(max_steps=3000)

    # B = 9, not a multiple of 4: near-critical β on both sides of β_c, and far from it.
    betas = np.concatenate([lam * np.asarray(NEAR_CRITICAL), [0.003, 0.02, 0.2, 1.0]])
    dense = vf.DenseMap()
    one = vf.solve(x, betas, grid, iteration=proto, step_map=dense, throw=False)
    many = vf.solve(x, betas, grid, iteration=proto, step_map=dense, schedule=vf.Sharded(), throw=False)
    out["B"] = len(betas)
    out["psi_gap"] = gap(many.psi, one.psi)
    out["dtype"] = str(many.psi.dtype)
    out["same_steps"] = bool(np.array_equal(many.steps, one.steps))
    out["same_converged"] = bool(np.array_equal(many.converged, one.converged))
    out["residual_gap"] = gap(many.residual, one.residual)
    out["beta_gap"] = gap(many.beta, betas)
    psi = np.asarray(many.psi)
    out["spread"] = np.abs(psi - x.mean(axis=0)).max(axis=(1, 2)).tolist()
    out["converged"] = np.asarray(many.converged).tolist()
    # Independent check: converged ψ are fixed points of the NumPy map.
    out["numpy_map_gap"] = [gap(np_step(p, x, b, lp), p) for p, b in zip(psi, betas)]

    # B = 8 divisible: per-β ψ0 (B, K, d), the result stays sharded over all devices.
    psi0 = np.stack([np.asarray(vf.initial_psi(x, grid, key=jax.random.PRNGKey(i))) for i in range(8)])
    one = vf.solve(x, betas[:8], grid, psi0=psi0, throw=False)
    many = vf.solve(x, betas[:8], grid, psi0=psi0, schedule=vf.Sharded(), throw=False)
    out["psi0_gap"] = gap(many.psi, one.psi)
    out["result_devices"] = len(many.psi.sharding.device_set)
    out["shard_rows"] = sorted(s.data.shape[0] for s in many.psi.addressable_shards)

    # The blocked map inside each device's shard, on 3 of the 4 devices (B = 5 → 6).
    many = vf.solve(x, betas[:5], grid, iteration=proto, step_map=vf.BlockedMap(tile_chunk=24, data_chunk=64),
                    schedule=vf.Sharded(devices=jax.devices()[:3]), throw=False)
    out["streamed_gap"] = gap(many.psi, vf.solve(x, betas[:5], grid, iteration=proto, throw=False).psi)
    out["streamed_mesh"] = len(many.psi.sharding.device_set)

    # The Pallas map (interpreted on CPU) inside each device's shard: B = 4, near-critical included.
    b4 = betas[[0, 2, 5, 8]]
    many = vf.solve(x, b4, grid, iteration=proto, step_map=vf.PallasMap(data_block=64, tile_block=16),
                    schedule=vf.Sharded(), throw=False)
    one = vf.solve(x, b4, grid, iteration=proto, throw=False)
    out["fused_gap"] = gap(many.psi, one.psi)
    out["fused_same_steps"] = bool(np.array_equal(many.steps, one.steps))

    # A Lipschitz penalty with one strength per β (sharded with β, padded with the last), each
    # device's shard in a Vmapped inner schedule: B = 5 on 4 devices.
    b5 = betas[[0, 2, 5, 7, 8]]
    lip = vf.LipschitzStrength(strength=(0.0, 0.5, 1.0, 2.0, 4.0), support="local", r=0.3)
    one = vf.solve(x, b5, grid, iteration=proto, constraint=lip, throw=False)
    many = vf.solve(x, b5, grid, iteration=proto, constraint=lip,
                    schedule=vf.Sharded(inner=vf.Vmapped(batch_size=1)), throw=False)
    out["lipschitz_gap"] = gap(many.psi, one.psi)
    out["lipschitz_same_steps"] = bool(np.array_equal(many.steps, one.steps))
    out["lipschitz_same_status"] = bool(np.array_equal(many.status, one.status))
    out["lipschitz_strength"] = np.asarray(many.stats["strength"]).tolist()
    out["lipschitz_changes_psi"] = gap(one.psi, vf.solve(x, b5, grid, iteration=proto, throw=False).psi)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def multi_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    prelude = f"TESTS = {TESTS!r}\nNEAR_CRITICAL = {NEAR_CRITICAL!r}\n"
    proc = subprocess.run([sys.executable, "-c", prelude + SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_subprocess_has_devices_and_float64(multi_device):
    assert multi_device["devices"] == NUM_DEVICES
    assert multi_device["x64"] and multi_device["dtype"] == "float64"


def test_sharded_equals_one_device_with_padding(multi_device):
    assert multi_device["B"] % NUM_DEVICES != 0
    assert multi_device["psi_gap"] <= 1e-6
    assert multi_device["same_steps"] and multi_device["same_converged"]
    assert multi_device["residual_gap"] <= 1e-12
    assert multi_device["beta_gap"] == 0.0  # the padding was dropped, order kept


def test_near_critical_fixed_points_are_fixed_points_of_numpy_map(multi_device):
    spread, conv, gap = (np.asarray(multi_device[k]) for k in ("spread", "converged", "numpy_map_gap"))
    assert conv[: len(NEAR_CRITICAL)].all()
    assert np.all(gap[conv] < 1e-8)
    # Below β_c the tiles stay spread over the data; above it they collapse to the mean.
    factors = np.asarray(NEAR_CRITICAL)
    assert np.all(spread[: len(factors)][factors < 1.0] > 0.1)
    assert np.all(spread[: len(factors)][factors > 1.025] < 1e-6)


def test_per_beta_psi0_and_result_stays_sharded(multi_device):
    assert multi_device["psi0_gap"] <= 1e-6
    assert multi_device["result_devices"] == NUM_DEVICES
    assert multi_device["shard_rows"] == [8 // NUM_DEVICES] * NUM_DEVICES  # split over β, not copied


def test_blocked_map_on_a_device_subset(multi_device):
    assert multi_device["streamed_gap"] <= 1e-6
    assert multi_device["streamed_mesh"] == 3


def test_pallas_kernels_inside_the_shards(multi_device):
    assert multi_device["fused_gap"] <= 1e-6 and multi_device["fused_same_steps"]


def test_lipschitz_constraint_with_per_beta_strength_inside_the_shards(multi_device):
    assert multi_device["lipschitz_gap"] <= 1e-6
    assert multi_device["lipschitz_same_steps"] and multi_device["lipschitz_same_status"]
    assert multi_device["lipschitz_strength"] == [0.0, 0.5, 1.0, 2.0, 4.0]  # each β kept its own, in order
    assert multi_device["lipschitz_changes_psi"] > 1e-3  # the constraint was applied


# --------------------------------------------------------------- two processes (jax.distributed)

MP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    pid, port = int(sys.argv[1]), sys.argv[2]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process gather on CPU
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import vaefp_jax as vf
    sys.path.insert(0, TESTS)
    from conftest import np_step

    x = vf.datasets.gaussian_blob(150)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True)).max())
    grid = vf.LatentGrid.uniform(6)
    proto = vf.Damped.tight(max_steps=3000)
    betas = np.concatenate([lam * np.array([0.97, 1.05]), [0.005, 0.05, 1.0]])  # B = 5 over 4 devices
    many = vf.solve(x, betas, grid, iteration=proto, schedule=vf.Sharded(), throw=False)
    one = vf.solve(x, betas, grid, iteration=proto, throw=False)  # this process alone
    psi = np.asarray(many.psi)
    psi0 = np.stack([np.asarray(vf.initial_psi(x, grid, key=jax.random.PRNGKey(i))) for i in range(4)])
    many4 = vf.solve(x, betas[:4], grid, psi0=psi0, iteration=proto, schedule=vf.Sharded(), throw=False)
    one4 = vf.solve(x, betas[:4], grid, psi0=psi0, iteration=proto, throw=False)
    lp = np.asarray(grid.log_prior)
    print(json.dumps({
        "pid": pid, "processes": jax.process_count(), "devices": jax.device_count(),
        "local_devices": jax.local_device_count(), "gathered": isinstance(many.psi, np.ndarray),
        "shape": list(psi.shape), "psi_gap": float(np.max(np.abs(psi - np.asarray(one.psi)))),
        "same_steps": bool(np.array_equal(np.asarray(many.steps), np.asarray(one.steps))),
        "converged": np.asarray(many.converged).tolist(),
        "numpy_map_gap": max(float(np.max(np.abs(np_step(p, x, b, lp) - p))) for p, b in zip(psi, betas)),
        "psi0_gap": float(np.max(np.abs(np.asarray(many4.psi) - np.asarray(one4.psi)))),
    }))
    """
)


@pytest.fixture(scope="module")
def two_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    code = f"TESTS = {TESTS!r}\n" + MP_SCRIPT
    procs = [subprocess.Popen([sys.executable, "-c", code, str(pid), str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-4000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    return outs


def test_two_processes_gather_the_one_process_result(two_processes):
    # Multi-controller JAX: 2 processes × 2 CPU devices; every process makes the
    # same call and receives the whole result (gathered across processes).
    for out in two_processes:
        assert out["processes"] == 2 and out["devices"] == 4 and out["local_devices"] == 2
        assert out["gathered"] and out["shape"] == [5, 36, 2]
        assert out["psi_gap"] <= 1e-6 and out["same_steps"]
        assert all(out["converged"]) and out["numpy_map_gap"] < 1e-8
        assert out["psi0_gap"] <= 1e-6  # per-β ψ0 sharded across the processes


# --------------------------------------------------------------- in-process (one device)


def test_one_device_equals_solve():
    x = vf.datasets.three_clusters(60)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 1.0, 5)
    a = vf.solve(x, betas, grid, schedule=vf.Sharded(devices=jax.devices()[:1]), throw=False)
    b = vf.solve(x, betas, grid, throw=False)
    np.testing.assert_array_equal(np.asarray(a.psi), np.asarray(b.psi))
    np.testing.assert_array_equal(np.asarray(a.steps), np.asarray(b.steps))
    assert a.tol == b.tol


def test_padded_size():
    assert [padded_size(b, 4) for b in (1, 4, 5, 9)] == [4, 4, 8, 12]
    assert padded_size(7, 1) == 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(schedule=vf.Sharded(devices=[])), "devices is empty"),
        (dict(betas=np.array([0.1, -1.0])), "betas must be > 0"),
        (dict(betas=np.ones((2, 2))), r"betas must have shape \(B,\)"),
        (dict(x=np.ones(5)), r"x must have shape \(n, d\)"),
        (dict(psi0=np.zeros((3, 2))), "psi0 has 3 tiles but the grid has 16"),
        (dict(psi0=np.zeros((5, 16, 2))), "psi0 has 5 rows but betas has 2"),
        (dict(constraint=vf.LipschitzStrength(0.1, r=np.array(0.4))), "must be hashable"),
    ],
)
def test_errors(kwargs, match):
    args = dict(x=vf.datasets.three_clusters(30), betas=np.array([0.01, 0.1]), grid=vf.LatentGrid.uniform(4))
    args.update(kwargs)
    x, betas, grid = args.pop("x"), args.pop("betas"), args.pop("grid")
    args.setdefault("schedule", vf.Sharded())
    with pytest.raises(ValueError, match=match):
        vf.solve(x, betas, grid, **args)


def test_beta_mesh_rejects_repeated_devices():
    d = jax.devices()[0]
    with pytest.raises(ValueError, match="more than once"):
        beta_mesh([d, d])
