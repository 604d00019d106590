"""Run directories: config, exemplars, loss history and orbax checkpoints.

Layout of a run directory ``out/``::

    out/config.json          VAEConfig
    out/exemplars.npz        the training images (n, D), labels, indices
    out/history.json         [step, ELBO, KL] every ``log_every`` steps
    out/checkpoints/<step>/  orbax: {"params", "opt_state", "step"}

A checkpoint holds the model's ``nnx.State`` (from ``nnx.split``) and the optax
state; it is restored into abstract targets built with ``nnx.eval_shape`` from
the saved config, so no arrays are allocated twice.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vaefp_jax.mnist import Exemplars
from vaefp_jax.vae.config import VAEConfig

__all__ = ["CONFIG_FILE", "EXEMPLARS_FILE", "HISTORY_FILE", "CHECKPOINT_DIR", "run_dir_of",
           "save_run_files", "load_config", "load_run_exemplars", "save_history", "load_history",
           "checkpoint_manager", "save_checkpoint", "restore_checkpoint", "latest_step"]

CONFIG_FILE = "config.json"
EXEMPLARS_FILE = "exemplars.npz"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"


def run_dir_of(path: str | os.PathLike) -> pathlib.Path:
    """The run directory for ``path``: a run directory itself, its ``checkpoints/``
    folder, or one ``checkpoints/<step>`` folder."""
    p = pathlib.Path(path).absolute()
    for cand in (p, p.parent, p.parent.parent):
        if (cand / CONFIG_FILE).is_file() and (cand / CHECKPOINT_DIR).is_dir():
            return cand
    raise ValueError(f"{path} is not a VAE run directory (no {CONFIG_FILE} with a {CHECKPOINT_DIR}/ folder)")


def save_run_files(out: pathlib.Path, config: VAEConfig, exemplars: Exemplars) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config.to_json(out / CONFIG_FILE)
    np.savez_compressed(out / EXEMPLARS_FILE, images=exemplars.images, labels=exemplars.labels,
                        indices=exemplars.indices)


def load_config(out: pathlib.Path) -> VAEConfig:
    return VAEConfig.from_json(out / CONFIG_FILE)


def load_run_exemplars(out: pathlib.Path) -> Exemplars:
    with np.load(out / EXEMPLARS_FILE) as f:
        return Exemplars(images=f["images"], labels=f["labels"], indices=f["indices"])


def save_history(out: pathlib.Path, history: list[list[float]]) -> None:
    with open(out / HISTORY_FILE, "w") as f:
        json.dump(history, f)


def load_history(out: pathlib.Path) -> list[list[float]]:
    p = out / HISTORY_FILE
    return json.loads(p.read_text()) if p.is_file() else []


def checkpoint_manager(out: pathlib.Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (out / CHECKPOINT_DIR).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    )


def latest_step(out: pathlib.Path) -> int | None:
    if not (out / CHECKPOINT_DIR).is_dir():
        return None
    with checkpoint_manager(out) as mngr:
        return mngr.latest_step()


def save_checkpoint(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any) -> None:
    """params: the model's nnx.State; opt_state: its optax state."""
    tree = {"params": params, "opt_state": opt_state, "step": np.asarray(step, np.int32)}
    mngr.save(step, args=ocp.args.StandardSave(tree), force=True)
    mngr.wait_until_finished()


def restore_checkpoint(out: pathlib.Path, abstract_params: Any, abstract_opt_state: Any,
                       step: int | None = None) -> tuple[int, Any, Any]:
    """→ (step, params nnx.State, opt_state) of ``step`` (default: the latest)."""
    with checkpoint_manager(out) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"no checkpoint in {out / CHECKPOINT_DIR}")
        target = {"params": abstract_params, "opt_state": abstract_opt_state,
                  "step": jax.ShapeDtypeStruct((), np.int32)}
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
    return int(tree["step"]), tree["params"], tree["opt_state"]
