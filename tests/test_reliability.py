"""Fail loudly, lose nothing (issue 13): faults injected on tiny runs, and what the user sees for each.

Divergence, corrupt and foreign checkpoints, a kill during a checkpoint write with TMPDIR on another
filesystem, resume, careless config values, bad data values found before any work, and output
folders shared by two runs. README.md's "Reliability" table lists the same cases.
"""
import errno
import io
import json
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

import evaluate as evaluate_cli
import train as train_cli
from mrirecon.atomic import FolderBusyError, path_lock, write_text
from mrirecon.config import ConfigError, load_config
from mrirecon.data.datasets import ReconDataset
from mrirecon.synthetic.generator import generate
from mrirecon.data.errors import DataError
from mrirecon.evaluation.predictions import write_metrics
from mrirecon.evaluation.runner import evaluate
from mrirecon.training.checkpoints import (AtomicCheckpointIO, CheckpointError, file_sha256, load_checkpoint,
                                           save_checkpoint)
from mrirecon.training.guards import FiniteGuard, NonFiniteError, check_finite
from mrirecon.training.module import load_module
from mrirecon.training.run import degradation, train

MASK = "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}"
TINY = ["model.num_unrolls=2", "model.prox.channels=8", "data.batch_size=2", "train.log_every_n_steps=1", MASK]
GLEAM = ["train.strategy=gleam", "train.num_modules=2"]


def config(synthetic, out, *extra):
    return load_config("configs/knee2d.yaml", [f"data.root={synthetic('knee2d')}", f"output_dir={out}",
                                               "train.max_epochs=1", *TINY, *extra])


def cli_args(synthetic, out, *extra):
    return ["--config", "configs/knee2d.yaml", f"data.root={synthetic('knee2d')}", f"output_dir={out}",
            "--no-progress", "train.max_epochs=1", *TINY, *extra]


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    """One tiny trained run (1 epoch), shared by the tests that only read its checkpoints."""
    return train(config(synthetic, tmp_path_factory.mktemp("trained")), enable_progress_bar=False)


def all_finite(path) -> bool:
    return all(torch.isfinite(v).all() for v in load_checkpoint(path)["state_dict"].values())


# ------------------------------------------------------------------------------------- non-finite guard
def test_check_finite_names_step_module_and_value():
    with pytest.raises(NonFiniteError, match=r"loss 'loss_module2'.*= nan at training step 7 \(module 2\)"):
        check_finite({"loss_module1": 0.5, "loss_module2": float("nan")}, step=7, module=2)
    w = torch.nn.Parameter(torch.zeros(3))
    w.grad = torch.tensor([0.0, float("inf"), 1.0])
    with pytest.raises(NonFiniteError, match=r"gradient .*= inf at training step 3 \(network\)"):
        check_finite({"loss": 1.0}, step=3, params=[w])
    check_finite({"loss": 1.0}, step=3, params=[torch.nn.Parameter(torch.zeros(2))])  # finite: no error


def test_guard_skip_mode_leaves_weights_untouched():
    lin = torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in lin.parameters()]
    guard = FiniteGuard("skip", step=0)
    (opt,) = guard.optimizers([torch.optim.SGD(lin.parameters(), lr=0.1)])
    opt.zero_grad()
    guard.backward(lambda loss: loss.backward())(lin(torch.tensor([[float("nan"), 1.0]])).sum())
    opt.step()
    assert guard.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))


def test_diverging_gleam_stops_at_once_naming_step_and_module(synthetic, tmp_path, capsys):
    # lr 1e6 blows the weights up after the first Adam step; no validation, so the training guard fires.
    rc = train_cli.main(cli_args(synthetic, tmp_path, *GLEAM, "train.lr=1e6", "train.max_epochs=3",
                                 "train.limit_val_batches=0"))
    err = capsys.readouterr().err
    assert rc == 3
    assert "training diverged: non-finite loss = nan at training step 1 (module 1)" in err
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert ckpts and all(all_finite(p) for p in ckpts)  # the NaN state was never saved


def test_clipped_gleam_run_logs_each_module_gradient_norm_before_clipping(synthetic, tmp_path):
    result = train(config(synthetic, tmp_path, *GLEAM, "train.grad_clip_norm=1e-3", "train.limit_val_batches=0"),
                   enable_progress_bar=False)
    header, *rows = [r.split(",") for r in (result.run_dir / "metrics.csv").read_text().splitlines()]
    for name in ("train/grad_norm_module1", "train/grad_norm_module2"):
        values = [float(r[header.index(name)]) for r in rows if r[header.index(name)]]
        assert values and all(v > 1e-3 for v in values)  # larger than the clip: it was clipped


def test_nonfinite_validation_score_is_never_best(synthetic, tmp_path):
    with pytest.raises(NonFiniteError, match=r"validation score val/psnr = nan after training step 0"):
        train(config(synthetic, tmp_path / "stop", "train.lr=1e6"), enable_progress_bar=False)
    assert not list((tmp_path / "stop").rglob("best-*.ckpt"))
    # skip: the run finishes, but an epoch with a NaN score is not a candidate for best
    result = train(config(synthetic, tmp_path / "skip", "train.lr=1e6", "train.nonfinite=skip"),
                   enable_progress_bar=False)
    assert result.best_checkpoint is None and result.best_score is None
    assert result.last_checkpoint is not None


def test_degradation_is_a_drop_of_more_than_3_db_below_the_best_or_a_nonfinite_last_score():
    assert degradation(30.0, 27.5) is None and degradation(None, 5.0) is None and degradation(30.0, None) is None
    assert "(26.90 dB) is 3.1 dB below the best (30.00 dB)" in degradation(30.0, 26.9)
    assert "(nan dB)" in degradation(30.0, float("nan"))


def test_a_run_whose_last_validation_collapsed_says_so(synthetic, tmp_path, capsys):
    first = train(config(synthetic, tmp_path), enable_progress_bar=False)
    assert first.warning is None and first.last_score == first.best_score  # one healthy epoch
    # the next epoch at lr 1e4 wrecks the weights (finite or not: skip mode lets the run finish either way)
    args = cli_args(synthetic, tmp_path, "train.max_epochs=2", "train.lr=1e4", "train.nonfinite=skip")
    with pytest.warns(UserWarning, match="below the best"):
        assert train_cli.main([*args, "--resume", str(first.last_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert f"below the best ({first.best_score:.2f} dB)" in out and out.count("warning: the last validation") == 1


def test_metrics_json_is_strict_json_with_nonfinite_flagged(tmp_path):
    rows = [{"fname": "a.h5", "psnr": float("nan"), "ssim": 0.5, "nmse": float("inf")}]
    path, _ = write_metrics(tmp_path, rows)

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    report = json.loads(path.read_text(), parse_constant=refuse)
    assert report["psnr"] == {"mean": None, "std": 0.0} and report["nmse"]["mean"] is None
    assert report["nonfinite"] == {"psnr.mean": "nan", "nmse.mean": "inf"}
    assert report["ssim"]["mean"] == 0.5


def test_evaluating_a_nan_checkpoint_exits_nonzero_with_valid_json(synthetic, trained, tmp_path, capsys):
    ckpt = load_checkpoint(trained.last_checkpoint)
    name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    save_checkpoint(ckpt, tmp_path / "nan.ckpt")
    rc = evaluate_cli.main(["--checkpoint", str(tmp_path / "nan.ckpt"), "--data", str(synthetic("knee2d")),
                            "--out", str(tmp_path / "out"), "--figures", "0", "--no-progress"])
    assert rc == 3 and "non-finite scores (psnr.mean" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["psnr"]["mean"] is None and report["nonfinite"]["psnr.mean"] == "nan"


# ------------------------------------------------------------------------------------- checkpoints
def _bad_checkpoints(tmp_path: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {"missing": tmp_path / "missing.ckpt", "folder": tmp_path / "folder.ckpt"}
    files["folder"].mkdir()
    for name, content in [("empty", b""), ("truncated", data[: len(data) // 2]), ("text", b"not a checkpoint\n"),
                          ("yaml", yaml.safe_dump({"state_dict": {"w": 1}}).encode())]:
        files[name] = tmp_path / f"{name}.ckpt"
        files[name].write_bytes(content)
    files["tensor"] = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), files["tensor"])
    files["foreign"] = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 0}, files["foreign"])
    return files


WHY = {"missing": "not found", "folder": "is a folder", "empty": "empty", "truncated": "not a readable",
       "text": "not a readable", "yaml": "not a readable", "tensor": "holds a Tensor",
       "foreign": "not an mrirecon checkpoint"}


@pytest.mark.parametrize("kind", list(WHY))
def test_a_bad_checkpoint_gets_a_clear_error_naming_the_file(trained, tmp_path, capsys, kind):
    path = _bad_checkpoints(tmp_path, Path(trained.last_checkpoint))[kind]
    with pytest.raises(CheckpointError, match=WHY[kind]) as info:
        load_module(str(path))
    assert str(info.value).startswith(f"{path}: ")
    # evaluate.py and train.py --resume: exit 2 with the message, no traceback
    assert evaluate_cli.main(["--checkpoint", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: " in err and WHY[kind] in err
    assert train_cli.main(["--config", "configs/knee2d.yaml", "--resume", str(path),
                           f"output_dir={tmp_path / 'runs'}"]) == 2
    assert f"error: {path}: " in capsys.readouterr().err


class SimulatedKill(Exception):
    """Stands for SIGKILL arriving in the middle of a write."""


def test_kill_during_checkpoint_write_keeps_previous_last(synthetic, tmp_path, monkeypatch):
    first = train(config(synthetic, tmp_path), enable_progress_bar=False)
    last = Path(first.last_checkpoint)
    before = last.read_bytes()
    # TMPDIR on another filesystem: a rename from it fails with EXDEV and a move falls back to copying
    # over the target in place; the kill comes halfway through that copy, or just before our rename.
    other_fs = tmp_path / "other_fs"
    other_fs.mkdir()
    monkeypatch.setenv("TMPDIR", str(other_fs))
    monkeypatch.setattr("tempfile.tempdir", None)

    def rename(src, dst, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    real_copyfile, real_replace = shutil.copyfile, os.replace

    def copyfile(src, dst, **kw):
        if not str(dst).endswith("last.ckpt"):
            return real_copyfile(src, dst, **kw)
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])
        raise SimulatedKill


    def replace(src, dst, **kw):
        if str(dst).endswith("last.ckpt"):
            raise SimulatedKill
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SimulatedKill):
        train(config(synthetic, tmp_path, "train.max_epochs=2"), resume=str(last), enable_progress_bar=False)
    monkeypatch.undo()
    assert last.read_bytes() == before
    assert not [p for p in last.parent.iterdir() if p.suffix == ".tmp"] and not list(other_fs.iterdir())
    assert load_checkpoint(last)["epoch"] == 0


def test_checkpoint_io_writes_beside_the_target_whatever_tmpdir_is(tmp_path, monkeypatch):
    other = tmp_path / "tmpdir"
    other.mkdir()
    monkeypatch.setenv("TMPDIR", str(other))
    monkeypatch.setattr("tempfile.tempdir", None)
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (seen.append((Path(s).parent, Path(d).parent)),
                                                    real_replace(s, d)))
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "ckpts" / "last.ckpt")
    assert seen == [(tmp_path / "ckpts", tmp_path / "ckpts")]
    assert torch.equal(torch.load(tmp_path / "ckpts" / "last.ckpt")["w"], torch.ones(2))


# ------------------------------------------------------------------------------------- resume
def test_resume_continues_the_run_folder_and_its_best_record(synthetic, tmp_path):
    first = train(config(synthetic, tmp_path), enable_progress_bar=False)
    resumed = train(config(synthetic, tmp_path, "train.max_epochs=3"), resume=first.last_checkpoint,
                    enable_progress_bar=False)
    assert resumed.run_dir == first.run_dir.resolve()
    assert sorted(p.name for p in (tmp_path / "knee2d").iterdir()) == ["version_0"]
    lines = (resumed.run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("val/psnr")
    scores = [float(r.split(",")[col]) for r in lines[1:] if r.split(",")[col]]
    assert len(scores) == 3  # epochs 0, 1, 2 in one metrics.csv
    assert resumed.best_score == pytest.approx(max(scores), rel=1e-6)
    assert resumed.best_checkpoint.endswith(f"best-epoch{int(np.argmax(scores))}.ckpt")


def test_resume_from_a_copied_checkpoint_records_the_link(synthetic, trained, tmp_path):
    copy = tmp_path / "elsewhere.ckpt"
    shutil.copy(trained.last_checkpoint, copy)
    resumed = train(config(synthetic, tmp_path, "train.max_epochs=2"), resume=str(copy), enable_progress_bar=False)
    assert resumed.run_dir == (tmp_path / "knee2d" / "version_0").resolve()  # a new run folder, not the original
    (record,) = json.loads((resumed.run_dir / "resumes.json").read_text())
    assert record["checkpoint"] == str(copy.resolve()) and record["sha256"] == file_sha256(copy)


def test_resume_applies_and_records_a_changed_learning_rate(synthetic, tmp_path):
    first = train(config(synthetic, tmp_path), enable_progress_bar=False)
    sha = file_sha256(first.last_checkpoint)  # last.ckpt is rewritten by the resumed run
    resumed = train(config(synthetic, tmp_path, "train.max_epochs=2", "train.lr=1e-2"),
                    resume=first.last_checkpoint, enable_progress_bar=False)
    groups = load_checkpoint(resumed.last_checkpoint)["optimizer_states"][0]["param_groups"]
    assert [g["lr"] for g in groups] == [1e-2]
    (record,) = json.loads((resumed.run_dir / "resumes.json").read_text())
    assert record["changed"]["train.lr"] == {"checkpoint": 1e-3, "now": 1e-2}  # configs/knee2d.yaml: 1e-3
    assert record["sha256"] == sha and record["epoch"] == 1
    assert load_config(resumed.run_dir / "config.yaml").train.lr == 1e-2


def test_resume_refuses_a_changed_schedule_naming_the_key(synthetic, trained, tmp_path):
    cfg = config(synthetic, tmp_path, "train.scheduler={name: cosine}")
    with pytest.raises(ValueError, match=r"train\.scheduler: checkpoint None vs config \{'name': 'cosine'\}"):
        train(cfg, resume=trained.last_checkpoint, enable_progress_bar=False)


# ------------------------------------------------------------------------------------- config
def test_scientific_notation_parses_as_float(tmp_path):
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3
    (tmp_path / "c.yaml").write_text("train:\n  lr: 5e-4\n  weight_decay: 0\n")
    assert load_config(tmp_path / "c.yaml").train.lr == 5e-4


@pytest.mark.parametrize("override,message", [
    ("train.lr=.inf", r"train\.lr: must be a finite number > 0, got inf"),
    ("train.lr=.nan", r"train\.lr: must be .*nan"),
    ("train.weight_decay=-1e-4", r"train\.weight_decay: must be a finite number >= 0"),
    ("model.prox.num_blocks=0", r"model\.prox\.num_blocks: must be an integer >= 1, got 0"),
    ("data.mask.center_fractions=[0.9]", r"data\.mask\.center_fractions: 0\.9 with acceleration 4 .* 1\.1x"),
    ("train.max_steps=0", r"train\.max_steps: must be -1 \(no limit\) or >= 1"),
    ("train.nonfinite=ignore", r"train\.nonfinite: 'ignore' is not one of"),
    ("train.grad_clip_norm=0", r"train\.grad_clip_norm: must be > 0, got 0"),
])
def test_values_that_cannot_be_meant_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_duplicate_yaml_key_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  max_epochs: 2\n  lr: 1.0e-2\n")
    with pytest.raises(ConfigError, match=rf"{path}, line 4, column 3: duplicate key 'lr' \(first on line 2\)"):
        load_config(path)


def test_yaml_syntax_error_is_named_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1.0e-3\n  max_epochs: 2\n")
    assert train_cli.main(["--config", str(path)]) == 2
    assert f"error: {path}, line 3" in capsys.readouterr().err


def test_overrides_are_accepted_after_options(tmp_path, capsys):
    # Overrides after --no-progress used to be "unrecognized arguments"; the bad lr proves they were read.
    assert train_cli.main(["--config", "configs/knee2d.yaml", "--no-progress", "train.lr=-1"]) == 2
    assert "train.lr: must be" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_request_without_cuda_gets_a_clear_message(synthetic, tmp_path, capsys):
    assert train_cli.main(cli_args(synthetic, tmp_path, "train.accelerator=gpu")) == 2
    assert "train.accelerator: 'gpu' requested but no CUDA GPU is available" in capsys.readouterr().err


def test_output_dir_that_is_a_file_gets_a_clear_message(synthetic, tmp_path, capsys):
    (tmp_path / "runs").write_text("a file")
    assert train_cli.main(cli_args(synthetic, tmp_path / "runs")) == 2
    assert f"output_dir: {tmp_path / 'runs'} is a file, not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- data values
def _edit(path: Path, key: str, fn) -> None:
    with h5py.File(path, "r+") as f:
        value = fn(f[key][()])
        del f[key]
        f.create_dataset(key, data=value)


def _set_attr(path: Path, **attrs) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs.update(attrs)


def _nan_at(a):
    a = a.copy()
    a.flat[5] = np.nan
    return a


FAULTS = {  # name: (how the file is broken, key named, words of the message)
    "inf maps": (lambda p: _edit(p, "espirit_maps", lambda m: m + np.inf), "espirit_maps", "NaN/Inf value(s) in the coil maps"),
    "nan kspace": (lambda p: _edit(p, "kspace", _nan_at), "kspace", "slice 0: 1 NaN/Inf value(s) in k-space"),
    "zero maps": (lambda p: _edit(p, "espirit_maps", np.zeros_like), "espirit_maps", "coil maps are all zero"),
    "two maps": (lambda p: _edit(p, "espirit_maps", lambda m: np.concatenate([m, m], 1)), "espirit_maps",
                 "2 ESPIRiT map set(s) but model.num_maps=1"),
    "kspace vs header": (lambda p: _edit(p, "kspace", lambda k: k[..., :-2]), "kspace",
                         "k-space is 64 x 30 (readout x phase encode) but the ISMRMRD header's encodedSpace matrix is 64 x 32"),
    "0 slices": (lambda p: [_edit(p, k, lambda a: a[:0]) for k in ("kspace", "reconstruction_rss", "espirit_maps")],
                 "kspace", "empty k-space array"),
    "knee3d file": (lambda p: _set_attr(p, acquisition="3D-FSE"), "attrs/acquisition",
                    "looks like knee3d data (acquisition '3D-FSE'), but data.kind is 'knee2d'"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_values_are_found_when_the_dataset_is_built(synthetic, tmp_path, fault):
    folder = tmp_path / "split"
    shutil.copytree(synthetic("knee2d") / "train", folder)
    bad = sorted(folder.glob("*.h5"))[0]
    breaker, key, words = FAULTS[fault]
    breaker(bad)
    with pytest.raises(DataError) as info:
        ReconDataset(folder, "knee2d", num_maps=1)
    assert str(info.value).startswith(f"{bad} [{key}]: ") and words in str(info.value)


def test_knee2d_files_under_knee3d_are_named(synthetic):
    with pytest.raises(DataError, match=r"looks like brain2d / knee2d data .* but data.kind is 'knee3d'"):
        ReconDataset(synthetic("knee2d") / "train", "knee3d")


def test_value_scan_can_be_skipped(synthetic, tmp_path):
    folder = tmp_path / "split"
    shutil.copytree(synthetic("knee2d") / "train", folder)
    _edit(sorted(folder.glob("*.h5"))[0], "kspace", _nan_at)
    assert len(ReconDataset(folder, "knee2d", scan_values=False)) == 2  # structure checked, values not read


# ------------------------------------------------------------------------------------- output folders
def test_concurrent_evaluations_into_one_folder_are_refused(synthetic, trained, tmp_path, capsys):
    out = tmp_path / "out"
    with path_lock(out):  # another evaluation holds the folder
        with pytest.raises(FolderBusyError, match=rf"{out}: another process \(pid {os.getpid()} on "):
            evaluate(load_config(None, [MASK]), synthetic("knee2d"), out, method="zero_filled", num_figures=0)
        assert evaluate_cli.main(["--checkpoint", trained.last_checkpoint, "--data", str(synthetic("knee2d")),
                                  "--out", str(out)]) == 2
    assert "another process" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_rerun_replaces_stale_outputs_and_predictions_record_their_origin(synthetic, trained, tmp_path):
    out = tmp_path / "out"
    args = ["--checkpoint", trained.last_checkpoint, "--data", str(synthetic("knee2d")), "--out", str(out),
            "--figures", "1", "--no-progress"]
    assert evaluate_cli.main(args) == 0
    (pred,) = out.glob("*.h5")
    shutil.copy(pred, out / "knee2d_999.h5")           # a prediction of an earlier run, on other data
    (out / "figures" / "knee2d_999.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")              # not ours: kept
    manifest = json.loads((out / ".mrirecon-outputs.json").read_text())
    write_text(out / ".mrirecon-outputs.json", json.dumps(manifest + ["figures/knee2d_999.png"]))
    assert evaluate_cli.main(args) == 0
    assert sorted(p.name for p in out.glob("*.h5")) == [pred.name]
    assert not (out / "figures" / "knee2d_999.png").exists() and (out / "notes.txt").read_text() == "mine"
    with h5py.File(pred, "r") as f:
        assert f.attrs["checkpoint"] == str(Path(trained.last_checkpoint).resolve())
        assert f.attrs["checkpoint_sha256"] == file_sha256(trained.last_checkpoint)
        assert yaml.safe_load(f.attrs["config"]) == load_module(trained.last_checkpoint).cfg.to_dict()


def test_evaluation_refuses_to_write_into_its_data_folder(synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic("knee2d") / "test", data)
    with pytest.raises(ConfigError, match=f"--out: {data} is the data folder {data}"):
        evaluate(load_config(None, [MASK]), data, data, method="zero_filled", num_figures=0)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        save_checkpoint({"w": torch.zeros(1)}, tmp_path / "b.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.ckpt").stat().st_mode & 0o777 == mode


def test_a_run_that_fails_before_any_result_leaves_no_folder(synthetic, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("mrirecon.training.module.ReconModule.training_step", broken)
    with pytest.raises(RuntimeError, match="boom"):
        train(config(synthetic, tmp_path), enable_progress_bar=False)
    assert not (tmp_path / "knee2d" / "version_0").exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_generation_and_evaluation_show_progress_unless_told_not_to(synthetic, tmp_path, monkeypatch):
    cfg = load_config(None, [MASK])
    for progress in (True, False):
        monkeypatch.setattr(sys, "stderr", Terminal())
        generate("knee2d", tmp_path / f"gen{progress}", volumes=3, coils=2, slices=1, size=(16, 16), progress=progress)
        evaluate(cfg, synthetic("knee2d"), tmp_path / f"out{progress}", method="zero_filled", num_figures=0,
                 progress=progress)
        shown = sys.stderr.getvalue()
        monkeypatch.undo()
        if progress:
            assert "synthetic knee2d: 100%" in shown and "evaluate zero_filled: 100%" in shown
        else:
            assert shown == ""
