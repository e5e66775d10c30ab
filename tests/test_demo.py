"""The demo's configuration: GLEAM by default for every kind, the user's overrides win; a stop by signal
during its training says so in one line."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from mrirecon.config import ConfigError
from mrirecon.demo import demo_config
from mrirecon.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["knee2d", "brain2d", "knee3d", "cine"])
def test_demo_trains_with_gleam_by_default(kind, tmp_path):
    cfg = demo_config(kind, tmp_path, [])
    assert cfg.train.strategy == "gleam" and cfg.train.num_modules == 2
    assert cfg.model.num_unrolls % cfg.train.num_modules == 0
    assert str(cfg.output_dir) == str(tmp_path / "runs")


def test_demo_overrides_come_after_the_defaults(tmp_path):
    cfg = demo_config("knee2d", tmp_path, ["train.strategy=e2e", "train.num_modules=1", "train.max_epochs=3"])
    assert (cfg.train.strategy, cfg.train.num_modules, cfg.train.max_epochs) == ("e2e", 1, 3)
    with pytest.raises(ConfigError, match="num_modules"):
        demo_config("knee2d", tmp_path, ["model.num_unrolls=5"])  # 2 modules do not divide 5 unrolls


@pytest.mark.parametrize("kind, epochs", [("knee2d", 8), ("brain2d", 8)])
def test_2d_demos_train_with_the_demo_schedule(kind, epochs, tmp_path):
    cfg = demo_config(kind, tmp_path, [])
    assert (cfg.data.batch_size, cfg.train.lr, cfg.train.scheduler) == (1, 3e-3, {"name": "cosine"})
    assert cfg.train.max_epochs == epochs
    assert demo_config(kind, tmp_path, ["train.max_epochs=2"]).train.max_epochs == 2  # the user's value wins


def test_the_2d_demos_train_modl_unless_the_user_says_pgd(tmp_path):
    brain = demo_config("brain2d", tmp_path, [], "synth")
    assert (brain.model.dc, brain.model.lam_init, brain.model.cg_iters) == ("modl", 0.05, 10)
    assert demo_config("knee2d", tmp_path, []).model.dc == "modl"
    assert demo_config("knee3d", tmp_path, []).model.dc == "pgd"  # the other kinds keep their configs' network
    back = demo_config("brain2d", tmp_path, ["model.dc=pgd", "train.max_epochs=24"], "synth")
    assert (back.model.dc, back.train.max_epochs) == ("pgd", 24)  # today's PGD network, on the user's word


def test_the_brain_demo_clips_gradients_to_norm_1_unless_the_user_lifts_it(tmp_path):
    assert demo_config("brain2d", tmp_path, [], "synth").train.grad_clip_norm == 1.0
    assert demo_config("knee2d", tmp_path, []).train.grad_clip_norm is None  # no spike in knee2d's logged norms
    assert demo_config("brain2d", tmp_path, ["train.grad_clip_norm=null"], "synth").train.grad_clip_norm is None


def _copy_with_attrs(src: Path, dst: Path, **attrs) -> None:
    shutil.copytree(src, dst)
    for path in dst.glob("*/*.h5"):
        with h5py.File(path, "r+") as f:
            for key, value in attrs.items():
                if value is None:
                    del f.attrs[key]
                else:
                    f.attrs[key] = value


def test_demo_rewrites_only_synthetic_data_of_an_older_generator(synthetic, tmp_path):
    from mrirecon.demo import _outdated_synthetic

    root = synthetic("knee2d")
    assert not _outdated_synthetic(root)  # written by this generator
    _copy_with_attrs(root, tmp_path / "v1", generator_version=None)  # version 1 files carry no version
    assert _outdated_synthetic(tmp_path / "v1")
    _copy_with_attrs(root, tmp_path / "user", generator_version=None, patient_id="scanner-0042")
    assert not _outdated_synthetic(tmp_path / "user")  # not ours: never rewritten


def test_brain_demo_trains_on_synthesised_brains_and_each_ablation_has_its_own_data(tmp_path):
    from mrirecon.demo import DEMO_ANATOMY, data_root

    assert DEMO_ANATOMY == {"brain2d": "synth"}
    assert demo_config("brain2d", tmp_path, [], "synth").data.root == "data/synthetic/brain2d_synth"
    no_deform = demo_config("brain2d", tmp_path, [], "synth", ("deformation",))
    assert no_deform.data.root == "data/synthetic/brain2d_synth_nodeformation"
    assert demo_config("knee2d", tmp_path, []).data.root == data_root("knee2d", None) == "data/synthetic/knee2d"
    assert demo_config("brain2d", tmp_path, ["data.root=/elsewhere"], "synth").data.root == "/elsewhere"


def test_demo_rewrites_synthetic_data_of_another_anatomy_or_ablation(synthetic, tmp_path):
    from mrirecon.demo import _outdated_synthetic

    root = synthetic("brain2d")  # the built-in model phantoms
    assert not _outdated_synthetic(root, "model") and _outdated_synthetic(root, "synth")
    _copy_with_attrs(root, tmp_path / "nocontrast", anatomy="synth", synth_off="contrast")
    assert not _outdated_synthetic(tmp_path / "nocontrast", "synth", ("contrast",))
    assert _outdated_synthetic(tmp_path / "nocontrast", "synth")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_the_demos_training_ends_with_one_line_and_128_plus_the_signal(synthetic, tmp_path, signum):
    """Ctrl-C (to the terminal's process group) or SIGTERM while `mrirecon demo` trains: it stops after the
    step with the one `stopped: ... resume with --resume ...` line of `mrirecon train`, exit 130 / 143."""
    out = tmp_path / "demo"
    tiny = [f"data.root={synthetic('knee2d')}", "model.num_unrolls=2", "model.prox.channels=8",
            "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}", "train.max_epochs=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mrirecon", "demo", "--out", str(out), "--no-progress", *tiny],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    last = out / "runs" / "knee2d" / "version_0" / "checkpoints" / "last.ckpt"
    end = time.monotonic() + 180
    while not last.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out waiting for the demo to train"
        time.sleep(0.1)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stdout + stderr
    name = signal.Signals(signum).name
    (line,) = [line for line in stderr.splitlines() if "stopped" in line.lower() or name in line]
    assert stderr.rstrip().endswith(line)
    assert line.startswith(f"stopped: training stopped by {name}: {last} holds training step ")
    assert line.endswith(f"; resume with --resume {last}")
    step = int(line.split("holds training step ")[1].split(";")[0])
    assert load_checkpoint(last)["global_step"] == 2 * step  # the demo's GLEAM: 2 module optimizers per batch
    assert "[4/5]" not in stdout and not (out / "REPORT.md").exists()  # stopped: no evaluation, no report
