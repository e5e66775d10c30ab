"""Lightning training, exact resume, evaluation outputs and early errors, end to end at tiny sizes."""
import csv
import json

import h5py
import numpy as np
import pytest
import torch

import evaluate as evaluate_cli
import train as train_cli
from mrirecon.config import load_config
from mrirecon.training.module import load_module
from mrirecon.training.run import train

TINY_MODEL = ["model.num_unrolls=2", "model.prox.channels=8", "data.batch_size=2", "train.log_every_n_steps=1"]
MASKS = {
    "knee2d": "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}",
    "knee3d": "data.mask={name: poisson, accelerations: [4], calib_size: [12, 12]}",
    "cine": "data.mask={name: kyt, center_fractions: [0.125], accelerations: [4]}",
}


def config(synthetic, tmp_path, kind="knee2d", *extra):
    return load_config(f"configs/{kind}.yaml", [f"data.root={synthetic(kind)}", f"output_dir={tmp_path / 'runs'}",
                                                MASKS[kind], "train.max_epochs=1", *TINY_MODEL, *extra])


def weights(module_or_path):
    m = load_module(module_or_path) if isinstance(module_or_path, str) else module_or_path
    return {k: v.clone() for k, v in m.net.state_dict().items()}


@pytest.mark.parametrize("strategy", ["e2e", "checkpoint", "gleam"])
def test_trains_every_parameter_and_writes_run_directory(synthetic, tmp_path, strategy):
    extra = ["train.strategy=gleam", "train.num_modules=2"] if strategy == "gleam" else [f"train.strategy={strategy}"]
    result = train(config(synthetic, tmp_path, "knee2d", *extra), enable_progress_bar=False)
    assert (result.run_dir / "config.yaml").is_file()
    assert load_config(result.run_dir / "config.yaml").train.strategy == strategy
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/psnr", "val/ssim", "val/nmse", "train/loss"} <= set(header)
    if strategy == "gleam":  # per-module losses and anytime metrics
        assert {"train/loss_module1", "val/psnr_module1", "val/psnr_module2"} <= set(header)
    assert result.best_checkpoint and result.best_score is not None and np.isfinite(result.best_score)
    # every parameter of every optimizer took Adam steps with a nonzero gradient
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["optimizer_states"]
    for opt in ckpt["optimizer_states"]:
        assert len(opt["state"]) == sum(len(g["params"]) for g in opt["param_groups"])
        assert all(torch.count_nonzero(st["exp_avg"]) > 0 for st in opt["state"].values())


def test_invertible_trains_in_lightning_with_a_small_inversion_error(synthetic, tmp_path):
    cfg = config(synthetic, tmp_path, "knee2d", "train.strategy=invertible", "model.dc=modl", "model.cg_iters=4",
                 "model.prox.lipschitz=0.9")
    result = train(cfg, enable_progress_bar=False)
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    errors = [float(r["train/inversion_error"]) for r in rows if r.get("train/inversion_error")]
    assert errors and all(0 <= e < 1e-3 for e in errors)  # MEL rebuilt every unroll's input almost exactly


def test_resume_is_exact(synthetic, tmp_path):
    straight = train(config(synthetic, tmp_path / "a", "knee2d", "train.max_epochs=2"), enable_progress_bar=False)
    first = train(config(synthetic, tmp_path / "b", "knee2d", "train.max_epochs=1"), enable_progress_bar=False)
    resumed = train(config(synthetic, tmp_path / "b", "knee2d", "train.max_epochs=2"), resume=first.last_checkpoint,
                    enable_progress_bar=False)
    # last.ckpt is the latest state even when the last epoch did not improve val/psnr
    assert torch.load(straight.last_checkpoint, weights_only=False)["epoch"] == 1
    a, b = weights(straight.last_checkpoint), weights(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_other_seed_differs(synthetic, tmp_path):
    r1 = train(config(synthetic, tmp_path / "a", "knee2d"), enable_progress_bar=False)
    r2 = train(config(synthetic, tmp_path / "b", "knee2d"), enable_progress_bar=False)
    r3 = train(config(synthetic, tmp_path / "c", "knee2d", "train.seed=1"), enable_progress_bar=False)
    w1, w2, w3 = (weights(r.last_checkpoint) for r in (r1, r2, r3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


@pytest.mark.parametrize("kind,extra", [("knee3d", []), ("knee3d", ["data.volume=true", "data.batch_size=1"]),
                                        ("cine", ["data.batch_size=1"])])
def test_3d_and_cine_train_and_evaluate(synthetic, tmp_path, kind, extra):
    result = train(config(synthetic, tmp_path, kind, *extra), enable_progress_bar=False)
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--checkpoint", result.last_checkpoint, "--data", str(synthetic(kind)),
                              "--out", str(out), "--figures", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "ssim", "nmse"} <= set(metrics) and np.isfinite(metrics["psnr"]["mean"])
    assert list((out / "figures").glob("*.png"))


def test_evaluate_writes_fastmri_predictions(synthetic, tmp_path):
    result = train(config(synthetic, tmp_path, "knee2d"), enable_progress_bar=False)
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--checkpoint", result.last_checkpoint, "--data", str(synthetic("knee2d") / "test"),
                              "--out", str(out)]) == 0
    test_files = sorted((synthetic("knee2d") / "test").glob("*.h5"))
    for src in test_files:
        with h5py.File(out / src.name) as f, h5py.File(src) as g:
            rec = f["reconstruction"]
            assert rec.dtype == np.float32 and rec.shape == g["reconstruction_rss"].shape
    rows = (out / "per_volume.csv").read_text().splitlines()
    assert len(rows) == 1 + len(test_files)
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_volumes"] == len(test_files) and m["seconds_per_slice"] > 0


@pytest.mark.parametrize("method", ["zero_filled", "sense"])
def test_evaluate_baselines(synthetic, tmp_path, method):
    out = tmp_path / method
    assert evaluate_cli.main(["--method", method, "--config", "configs/knee2d.yaml", "--data",
                              str(synthetic("knee2d")), "--out", str(out), MASKS["knee2d"]]) == 0
    assert json.loads((out / "metrics.json").read_text())["method"] == method


# ------------------------------------------------------------------ errors before training
@pytest.mark.parametrize("override,key", [("model.num_unrolls=0", "model.num_unrolls"),
                                          ("model.prox.name=transformer", "model.prox.name"),
                                          ("train.epochs=3", "train.epochs")])
def test_train_cli_rejects_bad_config(synthetic, tmp_path, capsys, override, key):
    assert train_cli.main(["--config", "configs/knee2d.yaml", f"data.root={synthetic('knee2d')}",
                           f"output_dir={tmp_path}", override]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "knee2d").exists()


def test_empty_data_folder_fails_early(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert train_cli.main(["--config", "configs/knee2d.yaml", f"data.root={tmp_path}",
                           f"output_dir={tmp_path / 'runs'}"]) == 2
    assert "no .h5 files" in capsys.readouterr().err


def test_invertible_with_plain_prox_fails_before_training(synthetic, tmp_path, capsys):
    assert train_cli.main(["--config", "configs/knee2d.yaml", f"data.root={synthetic('knee2d')}",
                           f"output_dir={tmp_path}", "train.strategy=invertible", "model.dc=modl"]) == 2
    assert "invertible" in capsys.readouterr().err


def test_resume_from_other_architecture_is_refused(synthetic, tmp_path):
    result = train(config(synthetic, tmp_path, "knee2d"), enable_progress_bar=False)
    other = config(synthetic, tmp_path, "knee2d", "model.prox.channels=12")
    with pytest.raises(ValueError, match="another architecture.*model.prox"):
        train(other, resume=result.last_checkpoint)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not an mrirecon checkpoint"):
        load_module(str(path))
