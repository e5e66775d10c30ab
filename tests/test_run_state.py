"""Runs that never lie about their state (issue 18, item 5): stops, locks, final checkpoints, run names,
copied run folders, evaluation output folders and the messages of careless input, one case each.

The pipeline's cases (a dead or stopped stage, Ctrl-C and SIGTERM to torchrun) are in test_run_state_pipeline.py.
"""
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import evaluate as evaluate_cli
import train as train_cli
from mrirecon.config import load_config
from mrirecon.evaluation.runner import evaluate
from mrirecon.training.checkpoints import load_checkpoint, save_checkpoint
from mrirecon.training.interrupts import TrainingInterrupted
from mrirecon.training.module import ReconModule, load_module
from mrirecon.training.run import RunCheckpoint, train

ROOT = Path(__file__).resolve().parents[1]
MASK = "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}"
TINY = ["model.num_unrolls=2", "model.prox.channels=8", "train.log_every_n_steps=1", MASK]
GLEAM = ["train.strategy=gleam", "train.num_modules=2"]


def settings(synthetic, out, *extra):
    return [f"data.root={synthetic('knee2d')}", f"output_dir={out}", *TINY, *extra]


def config(synthetic, out, *extra):
    return load_config("configs/knee2d.yaml", settings(synthetic, out, *extra))


def weights(path) -> dict:
    return {k: v.clone() for k, v in load_module(str(path)).net.state_dict().items()}


def scores(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    if "val/psnr" not in lines[0].split(","):
        return []
    col = lines[0].split(",").index("val/psnr")
    return [float(r.split(",")[col]) for r in lines[1:] if r.split(",")[col]]


def start_train(args: list[str], session: bool = False) -> subprocess.Popen:
    """train.py in a subprocess; `session`: in a session of its own, as a terminal starts a command (so that
    a "terminal" Ctrl-C can go to its process group)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/knee2d.yaml"),
                             "--no-progress", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=session)


def children(proc: subprocess.Popen) -> list[int]:
    done = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True)
    return sorted(int(pid) for pid in done.stdout.split())


def ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"  # a zombie has ended
    except (FileNotFoundError, IndexError):
        return True


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.communicate()}")
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------- Ctrl-C and SIGTERM
def test_a_stop_inside_an_epoch_saves_that_step_and_resumes_exactly(synthetic, tmp_path, monkeypatch):
    """SIGINT during training step 3 (epoch 1, batch 1 of 2): the step finishes, last.ckpt holds it, and a
    resumed run ends with the weights of an uninterrupted one."""
    common = ["data.batch_size=1", "train.max_epochs=3", *GLEAM]
    straight = train(config(synthetic, tmp_path / "a", *common), enable_progress_bar=False)
    real = ReconModule.training_step

    def step(self, batch, batch_idx):
        out = real(self, batch, batch_idx)
        if self.trainer.fit_loop.total_batch_idx == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the step runs
        return out

    monkeypatch.setattr(ReconModule, "training_step", step)
    with pytest.raises(TrainingInterrupted) as stop:
        train(config(synthetic, tmp_path / "b", *common), enable_progress_bar=False)
    monkeypatch.undo()
    assert stop.value.exit_code == 130 and stop.value.step == 3
    ckpt = load_checkpoint(stop.value.checkpoint)
    assert ckpt["global_step"] == 3 * 2 and ckpt["epoch"] == 1  # 3 batches, each stepping 2 modules
    assert f"training stopped by SIGINT: {stop.value.checkpoint} holds training step 3" in str(stop.value)
    resumed = train(config(synthetic, tmp_path / "b", *common), resume=stop.value.checkpoint,
                    enable_progress_bar=False)
    a, b = weights(straight.last_checkpoint), weights(resumed.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_train_py_stops_on_a_signal_with_one_line_and_a_resumable_checkpoint(synthetic, tmp_path, signum):
    proc = start_train(settings(synthetic, tmp_path, "train.max_epochs=100000", "data.batch_size=1"))
    last = tmp_path / "knee2d" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(last.exists, proc=proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out
    # one line says what happened (the lines before it are Lightning's start-up notes)
    (line,) = [line for line in err.splitlines() if "stopped" in line.lower() or "signal" in line.lower()]
    assert err.rstrip().endswith(line)
    name = signal.Signals(signum).name
    assert line.startswith(f"stopped: training stopped by {name}: {last} holds training step ")
    step = int(line.split("holds training step ")[1].split(";")[0])
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == step  # e2e: one optimizer step per batch
    resumed = train(config(synthetic, tmp_path, f"train.max_steps={step + 1}", "data.batch_size=1"),
                    resume=str(last), enable_progress_bar=False)
    assert load_checkpoint(resumed.last_checkpoint)["global_step"] == step + 1


@pytest.mark.parametrize("signum,to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"])
def test_lightning_ddp_stops_on_a_signal_at_one_step_with_one_line(synthetic, tmp_path, signum, to_group):
    """train.devices=2 (Lightning's DDP on CPU, gloo; Lightning starts the second process): Ctrl-C reaches
    both processes (the terminal's process group), SIGTERM only the first; both stop after the same step,
    rank 0 writes last.ckpt of it and alone says so, and --resume continues it."""
    common = ["data.batch_size=1", *GLEAM, "train.devices=2", "train.accelerator=cpu"]
    proc = start_train(settings(synthetic, tmp_path, "train.max_epochs=100000", *common), session=True)
    last = tmp_path / "knee2d" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() and len(children(proc)) == 1, proc=proc)
    (rank1,) = children(proc)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out
    name = signal.Signals(signum).name
    (line,) = [line for line in err.splitlines() if "stopped" in line.lower() or name in line]
    assert err.rstrip().endswith(line)
    assert line.startswith(f"stopped: training stopped by {name}: {last} holds training step ")
    step = int(line.split("holds training step ")[1].split(";")[0])
    assert load_checkpoint(last)["global_step"] == 2 * step  # each batch steps GLEAM's 2 module optimizers
    wait_for(lambda: ended(rank1), timeout=10)
    # the checkpoint is whole: --resume continues it (here on one process, which takes the other half of
    # the epoch the two processes shared)
    resumed = train(config(synthetic, tmp_path, f"train.max_steps={step + 1}", "data.batch_size=1", *GLEAM),
                    resume=str(last), enable_progress_bar=False)
    assert load_checkpoint(resumed.last_checkpoint)["global_step"] == 2 * (step + 1)


def test_a_killed_ddp_process_ends_the_run_with_exit_4_and_one_line(synthetic, tmp_path):
    """`kill -9` of Lightning's second DDP process: the first one's next collective fails; it says so in one
    line naming the checkpoint to resume from (exit 4) instead of gloo's traceback."""
    proc = start_train(settings(synthetic, tmp_path, "train.max_epochs=100000", "data.batch_size=1", *GLEAM,
                                "train.devices=2", "train.accelerator=cpu"))
    last = tmp_path / "knee2d" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() and len(children(proc)) == 1, proc=proc)
    os.kill(children(proc)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "Traceback" not in err + out and "Connection reset" not in err, err
    assert err.rstrip().splitlines()[-1] == (
        "error: data-parallel training, rank 0: another process of the run has died or stopped answering (its "
        f"connection closed); `mrirecon train --resume {last}` goes on from its last epoch")


def test_a_stopped_ddp_process_ends_the_run_within_train_ddp_timeout_s(synthetic, tmp_path):
    """SIGSTOP of Lightning's second DDP process (a hung or suspended process): the first one's next collective
    waits train.ddp_timeout_s (Lightning's own default: 30 minutes), then ends with the one line, exit 4."""
    proc = start_train(settings(synthetic, tmp_path, "train.max_epochs=100000", "data.batch_size=1", *GLEAM,
                                "train.devices=2", "train.accelerator=cpu", "train.ddp_timeout_s=8"))
    last = tmp_path / "knee2d" / "version_0" / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() and len(children(proc)) == 1, proc=proc)
    (rank1,) = children(proc)
    os.kill(rank1, signal.SIGSTOP)
    try:
        start = time.monotonic()
        proc.wait(timeout=90)  # not communicate(): the stopped process holds the output pipes open
        waited = time.monotonic() - start
    finally:
        os.kill(rank1, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    assert 8 <= waited < 60, waited
    assert "Traceback" not in err + out, err
    assert err.rstrip().splitlines()[-1] == (
        "error: data-parallel training, rank 0: another process of the run has died or stopped answering (timed "
        f"out); `mrirecon train --resume {last}` goes on from its last epoch")


# ---------------------------------------------------------------------------------- one writer per run
def test_a_second_resume_of_a_run_folder_is_refused_naming_the_holder(synthetic, tmp_path, capsys):
    first = train(config(synthetic, tmp_path, "train.max_epochs=1"), enable_progress_bar=False)
    run = first.run_dir
    args = settings(synthetic, tmp_path, "train.max_epochs=100000", "--resume", first.last_checkpoint)
    proc = start_train(args)
    try:
        lock = run / ".mrirecon.lock"
        wait_for(lambda: lock.is_file() and f"pid {proc.pid} " in lock.read_text(), proc=proc)
        rows = (run / "metrics.csv").read_text()
        assert train_cli.main(["--config", "configs/knee2d.yaml", "--no-progress", *args]) == 2
        err = capsys.readouterr().err
        assert f"error: {run}: another process (pid {proc.pid} on " in err and "train.py" in err
        assert (run / "metrics.csv").read_text().startswith(rows)  # nothing of the refused run in it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


# ---------------------------------------------------------------------------------- final checkpoint
@pytest.mark.parametrize("epochs,every", [(2, 5), (3, 2)])
def test_the_last_epoch_always_has_a_checkpoint_whatever_the_validation_schedule(synthetic, tmp_path, epochs,
                                                                                 every):
    result = train(config(synthetic, tmp_path, f"train.max_epochs={epochs}", f"train.check_val_every_n_epoch={every}"),
                   enable_progress_bar=False)
    assert result.last_checkpoint == str(result.run_dir / "checkpoints" / "last.ckpt")
    assert load_checkpoint(result.last_checkpoint)["epoch"] == epochs - 1  # the last epoch, 0-based
    assert len(scores(result.run_dir)) == epochs // every


# ---------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "' '"])
def test_a_name_cannot_leave_output_dir(synthetic, tmp_path, capsys, name):
    out = tmp_path / "a" / "b"
    assert train_cli.main(["--config", "configs/knee2d.yaml", "--no-progress",
                           *settings(synthetic, out, f"name={name}", "train.max_epochs=1")]) == 2
    assert f"error: name: {name.strip(chr(39))!r} would put the run folder outside output_dir" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


# ---------------------------------------------------------------------------------- copied run folders
def test_the_best_record_is_stored_relative_to_the_run_folder(tmp_path):
    a, b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    written = RunCheckpoint(dirpath=a, monitor="val/psnr", mode="max")
    written.best_model_path, written.best_model_score = str(a / "best-epoch1.ckpt"), torch.tensor(30.0)
    written.best_k_models = {str(a / "best-epoch1.ckpt"): torch.tensor(30.0)}
    copied = RunCheckpoint(dirpath=b, monitor="val/psnr", mode="max")
    copied.load_state_dict(written.state_dict())
    assert copied.best_model_path == str(b / "best-epoch1.ckpt") and float(copied.best_model_score) == 30.0
    assert list(copied.best_k_models) == [str(b / "best-epoch1.ckpt")]


def test_a_copied_run_folder_resumes_with_its_own_best_record(synthetic, tmp_path):
    first = train(config(synthetic, tmp_path / "orig", "train.max_epochs=2"), enable_progress_bar=False)
    copy = tmp_path / "copy" / "knee2d" / "version_0"
    shutil.copytree(first.run_dir, copy)
    shutil.rmtree(tmp_path / "orig")  # nothing may point into the original
    resumed = train(config(synthetic, tmp_path / "copy", "train.max_epochs=3"),
                    resume=str(copy / "checkpoints" / "last.ckpt"), enable_progress_bar=False)
    assert resumed.run_dir == copy.resolve()
    epochs = scores(copy)
    assert len(epochs) == 3 and resumed.best_score == pytest.approx(max(epochs), rel=1e-6)
    assert resumed.best_checkpoint == str(copy.resolve() / "checkpoints" / f"best-epoch{int(np.argmax(epochs))}.ckpt")
    assert Path(resumed.best_checkpoint).is_file()


# ---------------------------------------------------------------------------------- evaluation folders
@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    return train(config(synthetic, tmp_path_factory.mktemp("trained"), "train.max_epochs=1"),
                 enable_progress_bar=False)


@pytest.fixture
def dataset(synthetic, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic("knee2d"), root)
    return root


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where,how", [("test", "is the data folder"), ("test/out", "is inside the data folder"),
                                       ("val", "is the data folder"), ("val/sub", "is inside the data folder"),
                                       (".", "contains the data folder")])
def test_evaluation_never_writes_into_input_data(dataset, trained, capsys, where, how):
    before = contents(dataset)
    out = dataset / where
    assert evaluate_cli.main(["--checkpoint", trained.last_checkpoint, "--data", str(dataset / "test"),
                              "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    folder = (dataset / where.split("/")[0]).resolve() if where != "." else (dataset / "test").resolve()
    assert f"error: --out: {out} {how} {folder}" in err
    assert contents(dataset) == before


def test_evaluation_refuses_a_folder_holding_an_input_file(dataset, trained, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    raw = sorted((dataset / "test").glob("*.h5"))[0]
    shutil.copy(raw, elsewhere / raw.name)
    before = contents(elsewhere)
    assert evaluate_cli.main(["--checkpoint", trained.last_checkpoint, "--data", str(dataset / "test"),
                              "--out", str(elsewhere), "--no-progress"]) == 2
    assert f"error: --out: {elsewhere} holds input data ({raw.name})" in capsys.readouterr().err
    assert contents(elsewhere) == before


def test_an_evaluation_replaces_the_previous_one_only_when_complete(synthetic, trained, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = ["--checkpoint", trained.last_checkpoint, "--data", str(synthetic("knee2d")), "--out", str(out),
            "--figures", "1", "--no-progress"]
    assert evaluate_cli.main(args) == 0
    (out / "notes.txt").write_text("mine")
    before = contents(out)
    import mrirecon.evaluation.runner as runner

    def dies(*a, **k):
        raise KeyboardInterrupt  # stands for a stop in the middle of writing the reports

    monkeypatch.setattr(runner, "write_metrics", dies)
    with pytest.raises(KeyboardInterrupt):
        evaluate_cli.main(args)
    monkeypatch.undo()
    assert contents(out) == before  # the previous evaluation, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no partial folder, no lock left
    assert evaluate_cli.main(args + ["--num-unrolls", "1"]) == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_a_killed_evaluation_leaves_only_a_marked_partial_folder_which_the_next_one_removes(synthetic, trained,
                                                                                          tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    code = ("import sys, mrirecon.evaluation.runner as r, evaluate\n"
            "real = r.write_metrics\n"
            "def kill(*a, **k):\n    import os; os.kill(os.getpid(), 9)\n"
            "r.write_metrics = kill\n"
            "sys.exit(evaluate.main(sys.argv[1:]))\n")
    args = ["--checkpoint", trained.last_checkpoint, "--data", str(synthetic("knee2d")), "--out", str(out),
            "--figures", "0", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert not out.exists()
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith("eval.partial-")]
    assert not (partial / "metrics.json").exists()
    assert evaluate_cli.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"] and (out / "metrics.json").is_file()


def test_a_failed_evaluation_leaves_no_folder(trained, tmp_path, capsys):
    out = tmp_path / "new" / "eval"
    assert evaluate_cli.main(["--checkpoint", trained.last_checkpoint, "--data", str(tmp_path / "missing"),
                              "--out", str(out)]) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()


def test_an_unknown_device_is_named(synthetic, trained, tmp_path, capsys):
    assert evaluate_cli.main(["--checkpoint", trained.last_checkpoint, "--data", str(synthetic("knee2d")),
                              "--out", str(tmp_path / "eval"), "--device", "banana"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device 'banana': not a device") and "Traceback" not in err
    assert not (tmp_path / "eval").exists()


def test_a_pipeline_stage_file_names_the_merged_checkpoint(trained, tmp_path, capsys):
    ckpt = load_checkpoint(trained.last_checkpoint)
    stages = tmp_path / "run" / "checkpoints" / "stages"
    part = {"stage": 1, "modules": [1], "state_dict": {k[len("net."):]: v for k, v in ckpt["state_dict"].items()},
            "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": ckpt["hyper_parameters"]}
    save_checkpoint(part, stages / "stage1.ckpt")
    assert evaluate_cli.main(["--checkpoint", str(stages / "stage1.ckpt"), "--data", str(tmp_path),
                              "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert f"{stages / 'stage1.ckpt'}: is pipeline stage 1's part of a checkpoint" in err
    assert f"use the merged checkpoint of the whole network: {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}" in err


# ---------------------------------------------------------------------------------- disk full
def test_a_full_disk_names_the_file_being_written(synthetic, tmp_path, monkeypatch, capsys):
    real = torch.save

    def full(obj, f, *a, **k):
        real(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() says when the disk is full

    monkeypatch.setattr(torch, "save", full)
    assert train_cli.main(["--config", "configs/knee2d.yaml", "--no-progress",
                           *settings(synthetic, tmp_path, "train.max_epochs=1")]) == 2
    err = capsys.readouterr().err
    run = tmp_path / "knee2d" / "version_0" / "checkpoints"
    assert f"[Errno 28] No space left on device while writing {run.resolve()}/" in err
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_a_full_disk_during_evaluation_names_the_file(synthetic, tmp_path, monkeypatch):
    def full(self, name, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    with pytest.raises(OSError, match=rf"No space left on device while writing {tmp_path}/eval\.partial-\w+/knee2d_"):
        evaluate(load_config(None, [MASK]), synthetic("knee2d"), tmp_path / "eval", method="zero_filled",
                 num_figures=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- config values
@pytest.mark.parametrize("override,message", [
    ("train.seed=-1", "train.seed: must be an integer in [0, 2**32)"),
    ("train.limit_train_batches=2.5", "train.limit_train_batches: must be a fraction of the batches in (0, 1] or a "
                                      "whole number of batches, got 2.5"),
])
def test_careless_values_are_named_by_their_key(synthetic, tmp_path, capsys, override, message):
    assert train_cli.main(["--config", "configs/knee2d.yaml", *settings(synthetic, tmp_path, override)]) == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_a_whole_number_limit_is_a_count_of_batches(synthetic, tmp_path):
    # Lightning reads 2.0 as a fraction and refuses it; the config's float 2.0 means two batches.
    result = train(config(synthetic, tmp_path, "data.batch_size=1", "train.limit_train_batches=2",
                          "train.max_epochs=1"), enable_progress_bar=False)
    assert load_checkpoint(result.last_checkpoint)["global_step"] == 2


# ---------------------------------------------------------------------------------- the pipeline, in one process
def pipeline_config(synthetic, out, *extra):
    return config(synthetic, out, "train.strategy=gleam_pipeline", "train.num_modules=2", "data.batch_size=1",
                  *extra)


def test_a_stopped_pipeline_run_resumes_exactly(synthetic, tmp_path, monkeypatch):
    """The pipeline's stop protocol in a world of one (its store is in-process): SIGINT during step 3 (epoch 1,
    batch 1 of 2), last.ckpt of that step, and --resume ends with the weights of an uninterrupted run."""
    from mrirecon.distributed import pipeline

    straight = pipeline.train_pipeline(pipeline_config(synthetic, tmp_path / "a", "train.max_epochs=3"),
                                       enable_progress_bar=False)
    real, calls = pipeline.train_greedy_module, []

    def module_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # module 1 of step 3
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_greedy_module", module_step)
    with pytest.raises(TrainingInterrupted) as stop:
        pipeline.train_pipeline(pipeline_config(synthetic, tmp_path / "b", "train.max_epochs=3"),
                                enable_progress_bar=False)
    monkeypatch.undo()
    assert stop.value.exit_code == 130 and stop.value.step == 4  # rank 0 finishes one more step: 3 and 4
    assert load_checkpoint(stop.value.checkpoint)["pipeline"]["step"] == 4
    resumed = pipeline.train_pipeline(pipeline_config(synthetic, tmp_path / "b", "train.max_epochs=3"),
                                      resume=stop.value.checkpoint, enable_progress_bar=False)
    a, b = weights(straight.last_checkpoint), weights(resumed.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_pipeline_run_folder_has_one_writer_and_a_copy_keeps_its_best_record(synthetic, tmp_path):
    from mrirecon.atomic import FolderBusyError, folder_lock
    from mrirecon.distributed.pipeline import train_pipeline

    first = train_pipeline(pipeline_config(synthetic, tmp_path / "orig", "train.max_epochs=2"),
                           enable_progress_bar=False)
    with folder_lock(first.run_dir):  # another writer holds the run folder
        with pytest.raises(FolderBusyError, match=f"{first.run_dir}: another process"):
            train_pipeline(pipeline_config(synthetic, tmp_path / "orig", "train.max_epochs=3"),
                           resume=first.last_checkpoint, enable_progress_bar=False)
    copy = tmp_path / "copy" / "knee2d" / "version_0"
    shutil.copytree(first.run_dir, copy)
    shutil.rmtree(tmp_path / "orig")
    resumed = train_pipeline(pipeline_config(synthetic, tmp_path / "copy", "train.max_epochs=3"),
                             resume=str(copy / "checkpoints" / "last.ckpt"), enable_progress_bar=False)
    epochs = scores(copy)
    assert len(epochs) == 3 and resumed.best_score == pytest.approx(max(epochs), rel=1e-6)
    assert resumed.best_checkpoint == str(copy.resolve() / "checkpoints" / f"best-epoch{int(np.argmax(epochs))}.ckpt")
    assert Path(resumed.best_checkpoint).is_file()


def test_the_ddp_child_watch_ends_a_process_that_does_not_report_its_dead_peer_with_exit_4():
    """When a process Lightning's DDP launcher started dies and this process does not report it within the
    grace period (stuck), the watcher that replaces Lightning's SIGKILL ends it with one line and exit 4."""
    script = (
        "import subprocess, sys, time\n"
        "from mrirecon.training import data_parallel as dp\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.exit(9)'])\n"
        "dp._ChildWatch([child], period_s=0.1, grace_s=0.5).start()\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith(
        "error: data-parallel training, rank 0: the process of rank 1 (pid ")
    assert proc.stderr.rstrip().endswith("ended with exit status 9; resume from the run's checkpoints/last.ckpt")


def test_lightning_ddp_launcher_uses_the_child_watch():
    from pytorch_lightning.strategies.launchers import subprocess_script

    from mrirecon.training.data_parallel import install_child_watch, watch_child_processes

    install_child_watch()
    assert subprocess_script._launch_process_observer is watch_child_processes
