"""`mrirecon launch`: torchrun's launcher running `mrirecon train` on several processes, whose stops and
failures end with the one line a process said and mrirecon's exit status, never torchrun's tracebacks
(issue 18, item 5). Real processes: 2 pipeline stages (gloo, one thread each) under the launcher.

Ctrl-C in a terminal reaches the launcher's process group (torchrun starts each stage in a session of its
own and passes the signal on); SIGTERM goes to the launcher alone, as a job scheduler sends it.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrirecon.cli import main
from mrirecon.training.checkpoints import load_checkpoint
from test_pipeline import overrides
from test_run_state import children, ended

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 8


def start_launch(*args: str) -> subprocess.Popen:
    """`mrirecon launch ...` in a session of its own, as a terminal starts a command."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mrirecon", "launch", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def pipeline(root, out, *extra) -> list[str]:
    """2 stages of `mrirecon train` that run until stopped."""
    return ["--nproc_per_node", "2", "train", "--config", "configs/knee2d.yaml", "--no-progress",
            *overrides(root, out, "train.strategy=gleam_pipeline", f"train.pipeline.timeout_s={TIMEOUT_S}",
                       "train.max_steps=100000", "train.max_epochs=100000", *extra)]


def training(proc: subprocess.Popen, out: Path, timeout: float = 180.0) -> list[int]:
    """Wait until both stages train and an epoch has been checkpointed; the stages' pids."""
    end = time.monotonic() + timeout
    while not (any(out.rglob("last.ckpt")) and len(children(proc)) == 2):
        if proc.poll() is not None:
            raise AssertionError(f"mrirecon launch ended early ({proc.returncode}):\n{proc.communicate()[0]}")
        assert time.monotonic() < end, "timed out waiting for the pipeline to train"
        time.sleep(0.1)
    return children(proc)


def last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_ends_with_one_line_naming_a_resumable_checkpoint(synthetic, tmp_path, signum):
    out = tmp_path / "runs"
    args = pipeline(synthetic("knee2d"), out)
    proc = start_launch(*args)
    stages = training(proc, out)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C in the terminal: the launcher's process group
    else:
        proc.send_signal(signum)  # `kill PID` of the launcher
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 128 + signum, output
    assert "Traceback" not in output and "SignalException" not in output, output
    name = signal.Signals(signum).name
    (last,) = out.rglob("last.ckpt")
    said = [line for line in output.splitlines() if name in line or "stopped" in line]
    assert said == [last_line(output)], output  # one line, the last one
    assert said[0].startswith(f"stopped: training stopped by {name}: {last.resolve()} holds training step ")
    step = int(said[0].split("holds training step ")[1].split(";")[0])
    assert load_checkpoint(last)["pipeline"]["step"] == step
    assert all(ended(pid) for pid in stages)
    if signum == signal.SIGTERM:  # what the line says: --resume (the checkpoint carries its config) goes on
        resumed = start_launch("--nproc_per_node", "2", "train", "--resume", str(last), "--no-progress",
                               f"train.max_steps={step + 1}")
        output, _ = resumed.communicate(timeout=240)
        assert resumed.returncode == 0, output
        assert load_checkpoint(last)["pipeline"]["step"] == step + 1


def test_a_killed_stage_ends_the_run_with_exit_4_naming_it(synthetic, tmp_path):
    out = tmp_path / "runs"
    proc = start_launch(*pipeline(synthetic("knee2d"), out))
    stage0, stage1 = training(proc, out)  # started in rank order
    start = time.monotonic()
    os.kill(stage1, signal.SIGKILL)
    output, _ = proc.communicate(timeout=TIMEOUT_S + 60)
    assert time.monotonic() - start < TIMEOUT_S + 5, output
    assert proc.returncode == 4, output
    assert "Traceback" not in output and "ChildFailedError" not in output, output
    said = last_line(output)  # what stage 0 was doing when it noticed, then the stage that failed
    assert said.startswith("error: pipeline stage 0 (rank 0): "), output
    assert said.endswith(f"stage 1 (rank 1) has died (its process {stage1} has ended)"), output
    assert ended(stage0)


def test_a_process_that_says_nothing_is_named_by_the_launcher(tmp_path):
    """A script that dies without a word (not an mrirecon command): the launcher says which rank, exit 4."""
    script = tmp_path / "dies.py"
    script.write_text("import os\nos._exit(9 if os.environ['RANK'] == '1' else 0)\n")
    proc = start_launch("--nproc_per_node", "2", str(script))
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 4, output
    assert "Traceback" not in output, output
    assert last_line(output).startswith("error: torchrun: 1 process(es) failed; the first was rank 1 (local rank 1, "
                                        "pid "), output
    assert last_line(output).endswith("): exit status 9"), output


@pytest.mark.parametrize("argv,message", [
    (["--nproc_per_node", "2", "evaluate", "--checkpoint", "x"], "'evaluate' runs on one process; launch runs train"),
    (["--nproc_per_node", "2", "trian"], "'trian' is neither an mrirecon command (train) nor a script file"),
])
def test_launch_refuses_what_it_cannot_run_on_several_processes(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["launch", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_data_parallel_across_two_nodes_each_started_by_its_own_launcher(synthetic, tmp_path):
    """train.num_nodes=2: one `mrirecon launch --nnodes 2 --node_rank i` per node (both on this machine here,
    torchrun's static rendezvous at 127.0.0.1) runs Lightning's DDP over the two: each process trains half of
    every epoch (the 2 training slices: one batch each), rank 0 alone writes the run folder."""
    from test_pipeline import free_port

    out = tmp_path / "runs"
    launcher = ["--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "127.0.0.1", f"--master_port={free_port()}"]
    run = ["train", "--config", "configs/knee2d.yaml", "--no-progress",
           *overrides(synthetic("knee2d"), out, "train.strategy=e2e", "model.num_unrolls=2", "train.max_epochs=2",
                      "train.max_steps=-1", "train.devices=1", "train.num_nodes=2", "train.accelerator=cpu")]
    procs = [start_launch(*launcher, f"--node_rank={node}", *run) for node in (0, 1)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    (run_dir,) = (out / "knee2d").iterdir()
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert (ckpt["global_step"], ckpt["epoch"]) == (2, 1)  # one process alone: 4 steps for the 2 epochs
    assert "run directory:" in outputs[0] and "run directory:" not in outputs[1]
