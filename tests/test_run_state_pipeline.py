"""Runs that never lie, pipeline cases (issue 18, item 5): a stage killed (`kill -9`) or stopped (SIGSTOP),
and Ctrl-C / SIGTERM to torchrun, on 2 CPU processes (gloo, one thread each) launched by torchrun.

Every stage ends within train.pipeline.timeout_s plus a few seconds, says which stage failed and exits
with status 4; a stop by signal leaves last.ckpt of one common step that --resume continues. The same
under `mrirecon launch` (one line instead of torchrun's tracebacks) is in test_launch.py.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrirecon.training.checkpoints import load_checkpoint
from test_pipeline import free_port, overrides

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 8


def launch(args, state: Path, *, env_extra=None) -> subprocess.Popen:
    """torchrun with 2 stages in its own session (so a "terminal" Ctrl-C can reach the whole group)."""
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RUN_STATE_DIR": str(state),
           **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--master_addr", "127.0.0.1", "--master_port",
           str(free_port()), "--nproc_per_node", "2", str(ROOT / "tests" / "pipeline_fault.py"),
           "--config", str(ROOT / "configs/knee2d.yaml"), "--no-progress", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def long_run(root, out, *extra):
    return overrides(root, out, "train.strategy=gleam_pipeline", f"train.pipeline.timeout_s={TIMEOUT_S}",
                     "train.max_steps=100000", "train.max_epochs=100000", *extra)


def wait_for(condition, proc, timeout=180.0):
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"torchrun ended early ({proc.returncode}):\n{proc.communicate()[0]}")
        assert time.monotonic() < end, "timed out waiting for the pipeline to train"
        time.sleep(0.1)


def started(state: Path, out: Path, proc) -> dict[int, int]:
    """Wait until both stages run and an epoch has been checkpointed; their pids by rank."""
    wait_for(lambda: (state / "rank0.pid").is_file() and (state / "rank1.pid").is_file()
             and any(out.rglob("last.ckpt")), proc)
    return {r: int((state / f"rank{r}.pid").read_text()) for r in (0, 1)}


def exit_status(state: Path, rank: int) -> int | None:
    rc = state / f"rank{rank}.rc"
    return int(rc.read_text()) if rc.is_file() else None


def no_raw_backend_errors(output: str) -> None:
    for raw in ("Connection reset", "DistBackendError", "gloo/", "RuntimeError", "KeyboardInterrupt"):
        assert raw not in output, output


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_a_killed_or_stopped_stage_ends_every_stage_naming_it(synthetic, tmp_path, fault):
    out, state = tmp_path / "runs", tmp_path / "state"
    proc = launch(long_run(synthetic("knee2d"), out), state)
    pids = started(state, out, proc)
    start = time.monotonic()
    os.kill(pids[1], signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    output, _ = proc.communicate(timeout=TIMEOUT_S + 60)
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT_S + 5, (elapsed, output)
    assert proc.returncode != 0
    assert not Path(f"/proc/{pids[1]}").exists() and not Path(f"/proc/{pids[0]}").exists()  # every stage ended
    assert exit_status(state, 0) == 4, output
    what = "has died (its process" if fault == "kill" else "stopped answering: its process"
    assert f"error: pipeline stage 0 (rank 0): " in output and f"stage 1 (rank 1) {what} {pids[1]}" in output, output
    if fault == "stop":
        assert "is stopped (SIGSTOP); it is ended now (SIGKILL)" in output
    no_raw_backend_errors(output)


@pytest.mark.parametrize("signum,to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_ctrl_c_or_sigterm_to_torchrun_stops_every_stage_at_one_step(synthetic, tmp_path, signum, to_group):
    """Ctrl-C in a terminal reaches torchrun and every stage (the process group); SIGTERM goes to torchrun,
    which passes it on. Every stage stops after the same training step and last.ckpt holds it."""
    out, state = tmp_path / "runs", tmp_path / "state"
    args = long_run(synthetic("knee2d"), out)
    proc = launch(args, state)
    started(state, out, proc)
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode != 0
    assert [exit_status(state, r) for r in (0, 1)] == [128 + signum] * 2, output
    lines = [line for line in output.splitlines() if line.startswith("stopped: ")]
    assert len(lines) == 1, output  # one message, from rank 0
    name = signal.Signals(signum).name
    (last,) = out.rglob("last.ckpt")
    assert lines[0].startswith(f"stopped: training stopped by {name}: {last.resolve()} holds training step ")
    step = int(lines[0].split("holds training step ")[1].split(";")[0])
    ckpt = load_checkpoint(last)
    assert ckpt["pipeline"]["step"] == step and len(ckpt["optimizer_states"]) == 4
    no_raw_backend_errors(output)
    # --resume goes on from that step
    resumed = launch([*args, f"train.max_steps={step + 2}", "--resume", str(last)], tmp_path / "state2")
    output, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, output
    assert load_checkpoint(last)["pipeline"]["step"] == step + 2
