"""``vaefp train-vae`` and ``vaefp figure 1`` on a tiny configuration."""

import argparse
import json

import pytest

from vaefp_jax.vae.cli import figure1_command, register
from vaefp_jax.vae.trained import TrainedVAE

TINY = dict(encoder_hidden=16, encoder_depth=1, embedding_dim=4, num_couplings=2, coupling_hidden=8,
            coupling_depth=1, decoder_hidden=16, decoder_depth=1, num_samples=2, warmup_steps=1,
            checkpoint_every=2)


def _parser():
    p = argparse.ArgumentParser(prog="vaefp")
    register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cfg = d / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = d / "run"
    common = ["train-vae", "--config", str(cfg), "--steps", "4", "--out", str(out), "--quiet",
              "--prior-samples", "400", "--posterior-samples", "10", "--sigma", "0.9", "--beta", "1.5",
              "--samples", "3", "--seed", "2", "--no-figure"]
    args = _parser().parse_args(common + ["--stop-at", "2"])
    assert args.func(args) == 0
    assert not (out / "metrics.json").exists()  # interrupted: no evaluation yet
    args = _parser().parse_args(common + ["--resume"])
    assert args.func(args) == 0
    return out


def test_train_vae_writes_run(run):
    trained = TrainedVAE.load(run)
    assert trained.step == 4
    c = trained.config
    assert (c.sigma, c.beta, c.num_samples, c.seed, c.decoder_hidden) == (0.9, 1.5, 3, 2, 16)
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["masses"]) == 40
    assert not (run / "figure1.png").exists()  # --no-figure


def test_figure1_command_from_checkpoint(run, tmp_path):
    ns = argparse.Namespace(number="1", checkpoint=str(run / "checkpoints"), out=str(tmp_path), small=True, seed=0)
    assert figure1_command(ns) == 0
    assert (tmp_path / "figure1.png").stat().st_size > 0
    assert json.loads((tmp_path / "figure1_metrics.json").read_text())["num_exemplars"] == 40


def test_idx_options_go_together(tmp_path):
    args = _parser().parse_args(["train-vae", "--out", str(tmp_path), "--idx-images", "a.gz", "--quiet"])
    with pytest.raises(ValueError, match="together"):
        args.func(args)


def test_bad_checkpoint_path(tmp_path):
    ns = argparse.Namespace(checkpoint=str(tmp_path), out=str(tmp_path / "o"), small=True, seed=0)
    with pytest.raises(ValueError, match="run directory"):
        figure1_command(ns)


def test_rejects_bad_numbers():
    with pytest.raises(SystemExit):
        _parser().parse_args(["train-vae", "--sigma", "-1"])


def test_config_file_with_unknown_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not_a_field": 1}))
    args = _parser().parse_args(["train-vae", "--out", str(tmp_path), "--config", str(bad), "--quiet"])
    with pytest.raises(ValueError, match="unknown"):
        args.func(args)
