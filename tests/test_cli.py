"""The `mrirecon` command: installed beside the venv's python, one subcommand per job, errors exit non-zero
with a message; library modules hold no command-line code."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from mrirecon.cli import COMMANDS, main
from mrirecon.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(sys.executable).parent / "mrirecon"  # written by scripts/setup_venv.sh (or by pip install)
TINY_TRAIN = ["model.num_unrolls=2", "model.prox.channels=8", "data.batch_size=2", "train.max_epochs=1",
              "train.max_steps=1", "train.limit_val_batches=1", "train.log_every_n_steps=1", "--no-progress"]


def run_installed(*args, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(INSTALLED), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_installed_command_lists_every_subcommand_from_any_folder(tmp_path):
    assert INSTALLED.is_file() and os.access(INSTALLED, os.X_OK), "run `make setup` (scripts/setup_venv.sh)"
    done = run_installed("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["train", "launch", "evaluate", "demo", "synth", "maps", "cmrxrecon", "convex"]


def test_python_dash_m_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "mrirecon", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == run_installed("--help").stdout


def test_unknown_command_and_no_command_exit_2_with_a_message(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main([]) == 2
    assert "usage: mrirecon COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train"], ["launch"], ["evaluate"], ["demo"], ["synth"], ["maps"], ["cmrxrecon", "split"],
                                     ["convex", "fit"], ["convex", "interpret"]], ids=" ".join)
def test_every_subcommand_has_help_naming_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: mrirecon {' '.join(command)}" in capsys.readouterr().out


def test_synth_writes_a_tiny_dataset_through_the_installed_command(tmp_path):
    done = run_installed("synth", "--kind", "knee2d", "--out", str(tmp_path), "--volumes", "3", "--coils", "2",
                         "--slices", "1", "--size", "16", "16", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.h5")) == [
        "test/knee2d_002.h5", "train/knee2d_000.h5", "val/knee2d_001.h5"]
    with h5py.File(tmp_path / "train" / "knee2d_000.h5") as f:
        assert f["kspace"].shape == (1, 2, 32, 16)


def test_synth_bad_option_exits_2_naming_it(tmp_path):
    done = run_installed("synth", "--kind", "knee2d", "--anatomy", "mni152", "--out", str(tmp_path))
    assert done.returncode == 2 and "--anatomy mni152" in done.stderr and "Traceback" not in done.stderr


def test_train_then_evaluate_one_step(synthetic, tmp_path, capsys):
    root = synthetic("knee2d")
    assert main(["train", "--config", "configs/knee2d.yaml", f"data.root={root}", f"output_dir={tmp_path / 'runs'}",
                 *TINY_TRAIN]) == 0
    out = capsys.readouterr().out
    last = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("last checkpoint:"))
    assert Path(last).is_file()
    assert main(["evaluate", "--checkpoint", last, "--data", str(root / "test"), "--out", str(tmp_path / "eval"),
                 "--figures", "0", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_volumes"] == 1 and metrics["psnr"]["mean"] > 0


def test_resume_needs_only_the_checkpoint_whose_config_it_carries(synthetic, tmp_path, capsys):
    """`mrirecon train --resume CKPT` (what a stop's message says) goes on with the checkpoint's own config;
    overrides still apply on top."""
    root = synthetic("knee2d")
    assert main(["train", "--config", "configs/knee2d.yaml", f"data.root={root}", f"output_dir={tmp_path}",
                 "train.strategy=gleam", "train.num_modules=2", *(a for a in TINY_TRAIN if "max_steps" not in a)]) == 0
    last = next(line.split(":", 1)[1].strip() for line in capsys.readouterr().out.splitlines()
                if line.startswith("last checkpoint:"))
    assert main(["train", "--resume", last, "train.max_epochs=2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"last checkpoint: {last}" in out  # the same run folder
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == 2 * 2  # 2 batches (1 per epoch), each stepping the first run's 2 GLEAM modules
    assert ckpt["hyper_parameters"]["config"]["train"]["max_epochs"] == 2
    assert ckpt["hyper_parameters"]["config"]["train"]["strategy"] == "gleam"  # the checkpoint's, not the default


def test_train_without_config_or_resume_exits_2_naming_both(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "train.max_epochs=1"])
    assert exit_.value.code == 2 and "--config is required (or --resume CKPT alone" in capsys.readouterr().err


@pytest.mark.parametrize("env,settings,said", [
    ({"WORLD_SIZE": "2"}, [], "train.devices: 1 and train.num_nodes: 1, but the launcher started 2 processes, 2 "
     "per node (WORLD_SIZE=2, LOCAL_WORLD_SIZE=2): set train.devices=2 train.num_nodes=1"),
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}, ["train.devices=2"], "train.devices: 2 and train.num_nodes: 1, "
     "but the launcher started 4 processes, 2 per node (WORLD_SIZE=4, LOCAL_WORLD_SIZE=2): set train.devices=2 "
     "train.num_nodes=2"),
    ({}, ["train.num_nodes=2"], "train.num_nodes: 2 needs a launcher on every node: mrirecon launch --nnodes 2 "
     "--nproc_per_node 1"),
], ids=["two copies", "two nodes", "no launcher"])
def test_a_single_process_strategy_needs_devices_and_nodes_to_match_the_launcher(synthetic, tmp_path, monkeypatch,
                                                                                capsys, env, settings, said):
    """Under torchrun / `mrirecon launch` with 2 processes, e2e with train.devices=1 would train two copies of
    the run; across nodes train.num_nodes must say how many: refused before anything is written, naming the
    settings and the launcher's numbers."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["train", "--config", "configs/knee2d.yaml", f"data.root={synthetic('knee2d')}",
                 f"output_dir={tmp_path / 'runs'}", *TINY_TRAIN, *settings]) == 2
    assert capsys.readouterr().err.startswith(f"error: {said}")
    assert not (tmp_path / "runs").exists()


def test_train_bad_key_exits_2_naming_the_key(capsys):
    assert main(["train", "--config", "configs/knee2d.yaml", "train.epochs=3"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_evaluate_without_a_source_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "--checkpoint" in capsys.readouterr().err


def test_evaluate_runs_a_cine_baseline_of_the_one_registry(synthetic, tmp_path):
    root = synthetic("cine")
    assert main(["evaluate", "--method", "sense_per_frame", "--config", "configs/cine.yaml", "--data", str(root / "test"),
                 "--out", str(tmp_path / "eval"), "--no-tune", "--figures", "0", "--no-progress",
                 "data.mask={name: kyt, center_fractions: [0.125], accelerations: [4]}"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["method"] == "sense_per_frame" and metrics["num_volumes"] == 1


def test_evaluate_refuses_a_cine_baseline_for_other_data_naming_the_kind(tmp_path, capsys):
    assert main(["evaluate", "--method", "cs_temporal", "--config", "configs/knee2d.yaml", "--data", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "method 'cs_temporal' is for data kind(s) cine, not 'knee2d'" in capsys.readouterr().err


def _defines_main_or_runs_as_script(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def test_library_modules_hold_no_command_line_code():
    package = ROOT / "mrirecon"
    offenders = [p.relative_to(ROOT).as_posix() for p in sorted(package.rglob("*.py"))
                 if "cli" not in p.relative_to(package).parts[:1] and p.name != "__main__.py"
                 and _defines_main_or_runs_as_script(p)]
    assert offenders == []
    assert all((package / "cli" / f"{module}.py").is_file() for module, _ in COMMANDS.values())
