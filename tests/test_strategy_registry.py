"""A strategy is one file and a registration: one defined here, outside mrirecon/training/strategies/, trains,
checkpoints, resumes and evaluates through the same commands as the built-in ones."""
import json

import pytest
import torch

import evaluate as evaluate_cli
from mrirecon.config import ConfigError, load_config
from mrirecon.training.checkpoints import load_checkpoint
from mrirecon.training.module import load_module
from mrirecon.training.run import train
from mrirecon.training.strategies import Strategy, register_strategy, unique_parameters

MASK = "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}"


class SplitEndToEnd(Strategy):
    """End-to-end backpropagation with two optimizers: one for the first half of the unrolls, one for the rest."""

    def param_groups(self, net):
        half = net.num_unrolls // 2
        return [unique_parameters(p for u in net.unrolls[:half] for p in u.parameters()),
                unique_parameters(p for u in net.unrolls[half:] for p in u.parameters())]

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward):
        loss = loss_fn(net(kspace, maps, mask), target)
        backward(loss)
        return {"loss": float(loss.detach())}


register_strategy("split_e2e", SplitEndToEnd, fixed_on_resume=("train.lr",))


def config(synthetic, out, *extra):
    return load_config("configs/knee2d.yaml", [f"data.root={synthetic('knee2d')}", f"output_dir={out}", MASK,
                                               "model.num_unrolls=2", "model.prox.channels=8", "data.batch_size=1",
                                               "train.log_every_n_steps=1", "train.strategy=split_e2e", *extra])


def weights(path) -> dict:
    return {k: v.clone() for k, v in load_module(str(path)).net.state_dict().items()}


def test_an_outside_strategy_trains_resumes_and_evaluates(synthetic, tmp_path):
    straight = train(config(synthetic, tmp_path / "a", "train.max_epochs=2"), enable_progress_bar=False)
    ckpt = load_checkpoint(straight.last_checkpoint)
    assert len(ckpt["optimizer_states"]) == 2 and ckpt["global_step"] == 2 * 2 * 2  # 2 epochs x 2 batches x 2
    first = train(config(synthetic, tmp_path / "b", "train.max_epochs=1"), enable_progress_bar=False)
    resumed = train(config(synthetic, tmp_path / "b", "train.max_epochs=2"), resume=first.last_checkpoint,
                    enable_progress_bar=False)
    a, b = weights(straight.last_checkpoint), weights(resumed.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--checkpoint", resumed.last_checkpoint, "--data", str(synthetic("knee2d")),
                              "--out", str(out), "--figures", "0", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["psnr"]["mean"] > 0


def test_an_outside_strategy_counts_batches_for_max_steps_and_keeps_its_fixed_settings(synthetic, tmp_path):
    result = train(config(synthetic, tmp_path, "train.max_steps=3"), enable_progress_bar=False)
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["global_step"] == 3 * 2 and ckpt["epoch"] == 1  # 3 batches, each stepping both optimizers
    with pytest.raises(ValueError, match=r"train\.lr: checkpoint 0\.001 vs config 0\.01"):
        train(config(synthetic, tmp_path, "train.max_steps=4", "train.lr=1e-2"), resume=result.last_checkpoint)


def test_an_outside_strategy_takes_no_modules(synthetic, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.num_modules: only strategies that split the network into modules"):
        config(synthetic, tmp_path, "train.num_modules=2")
