"""The README's commands run as written (issue 18, "Done when"): every command of every code block of
README.md, in the README's order, in a scratch folder laid out like a fresh clone, with tiny settings added.

- A code block is a list of commands unless the line before it is `<!-- readme: not commands -->`.
- Each line is one command (`# ...` comments and `\\` continuations as in a shell). The command runs as
  written with the options and overrides of `tiny()` for its program added (overrides come last, so they win
  over the README's values, whose keys and options are still checked). A program without tiny settings
  fails this test: add its settings to `tiny` here, or mark the block.
- Placeholders: `RUN` is the run folder of the block's last `train`, `best-epochN.ckpt` its best checkpoint.
- `make TARGET ...` runs what `make -n` says the target runs (the set-up step, scripts/setup_venv.sh, is the
  one CI has just run); `make test` is this suite, run by CI (.ci/run), so only its recipe is checked.
- `mrirecon ...` runs in this process (the installed command is tests/test_cli.py's); `mrirecon launch`,
  `train` with `train.devices` > 1 (Lightning starts more processes by running the command line again),
  `torchrun` and `python SCRIPT` run as processes, one thread each.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mrirecon.cli import main

ROOT = Path(__file__).resolve().parents[1]
# MRIRECON_README=draft.md checks a draft of the README before it replaces README.md
README = Path(os.environ.get("MRIRECON_README", ROOT / "README.md"))
NOT_COMMANDS = "<!-- readme: not commands -->"
# What a fresh clone has at its root that the README's commands name (relative paths).
CLONE = ("configs", "train.py", "evaluate.py")

# Tiny settings per program: (options inserted after the command word, overrides appended at the end).
TRAIN = ["model.prox.channels=8", "data.batch_size=1", "train.max_epochs=1", "train.limit_train_batches=2",
         "train.limit_val_batches=1", "train.log_every_n_steps=1"]
SYNTH = ["--volumes", "3", "--coils", "4", "--slices", "2", "--size", "32", "32", "--no-progress"]


def tiny(program: str, synthetic) -> tuple[list[str], list[str]] | None:
    """The tiny settings of `program` (e.g. "mrirecon train"), or None when there are none."""
    return {
        "mrirecon synth": (SYNTH, []),
        "mrirecon maps": (["--workers", "1"], []),
        "mrirecon train": (["--no-progress"], TRAIN),
        "mrirecon evaluate": (["--figures", "0", "--no-progress"], []),
        "mrirecon launch": ([], ["--no-progress", *TRAIN]),
        "torchrun": ([], ["--no-progress", *TRAIN]),
        # the demo's own data step would write 60 volumes: it uses the tests' tiny set instead
        "mrirecon demo": (["--no-progress"], [f"data.root={synthetic('knee2d')}", "model.num_unrolls=2", *TRAIN]),
    }.get(program)


@dataclass
class Block:
    line: int           # 1-based line of README.md where the block starts
    commands: list[tuple[int, str]]  # (line, command)


def code_blocks(text: str) -> list[Block]:
    """The command blocks of a Markdown text: indented (4 spaces after a blank line) and fenced blocks,
    without those marked NOT_COMMANDS."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if lines[i].lstrip().startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```"))
            body, start, i = lines[i + 1:end], i + 1, end + 1
        elif lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body, start, i = [line[4:] for line in lines[i:end]], i, end
        else:
            i += 1
            continue
        if before != NOT_COMMANDS:
            blocks.append(Block(start + 1, join_continuations(body, start + 1)))
    return blocks


def join_continuations(body: list[str], first: int) -> list[tuple[int, str]]:
    commands, pending = [], None
    for n, line in enumerate(body, first):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = line.rstrip()
        if pending is not None:
            pending = (pending[0], pending[1] + " " + text.rstrip("\\").strip())
        else:
            pending = (n, text.rstrip("\\").strip())
        if not text.endswith("\\"):
            commands.append(pending)
            pending = None
    return commands


class Session:
    """Runs a block's commands in order in `folder`, as a user types them into a shell in a fresh clone."""

    def __init__(self, folder: Path, synthetic, capsys):
        self.folder, self.synthetic, self.capsys = folder, synthetic, capsys
        self.run: Path | None = None  # RUN: the run folder of the last `train`

    def resolve(self, arg: str, where: str) -> str:
        if "RUN/" in arg:
            assert self.run is not None, f"{where}: RUN used before any `train` in this block"
            arg = arg.replace("RUN/", f"{self.run}/")
            if "best-epochN.ckpt" in arg:
                (best,) = Path(arg).parent.glob("best-epoch*.ckpt")
                arg = str(best)
        return arg

    def __call__(self, n: int, command: str) -> None:
        where = f"{README.name} line {n}: {command}"
        argv = shlex.split(command, comments=True)
        env = {}
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
            key, value = argv.pop(0).split("=", 1)
            env[key] = value
        argv = [self.resolve(a, where) for a in argv]
        if argv[0] == "make":
            return self.make(n, argv, env, where)
        program = argv[0] if argv[0] in ("torchrun", "python") else " ".join(argv[:2])
        if program == "python":
            program = f"python {argv[1]}"
        settings = tiny({"python train.py": "mrirecon train", "python evaluate.py": "mrirecon evaluate"}
                        .get(program, program), self.synthetic)
        assert settings is not None, (f"{where}: no tiny settings for `{program}`: add them to tiny() in "
                                      f"tests/test_readme_commands.py, or mark the block {NOT_COMMANDS}")
        options, overrides = settings
        if "--resume" in argv:
            overrides = [*overrides, "train.max_epochs=2"]  # one epoch more than the run it resumes
        words = 1 if program in ("torchrun",) else 2
        argv = [*argv[:words], *options, *argv[words:], *overrides]
        several = argv[1] == "launch" or any(re.fullmatch(r"train\.devices=([2-9]|\d\d+)", a) for a in argv)
        if argv[0] == "mrirecon" and not several:
            self.in_process(argv[1:], where)
        else:
            self.process(argv, env, where)

    def in_process(self, args: list[str], where: str) -> None:
        self.capsys.readouterr()
        try:
            code = main(args)
        except SystemExit as e:  # argparse: a bad option
            code = e.code
        out, err = self.capsys.readouterr()
        assert code == 0, f"{where}: exit status {code}\n{err[-3000:]}"
        self.note_run(out)

    def process(self, argv: list[str], env: dict, where: str) -> None:
        if argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
        elif argv[0] == "mrirecon":
            argv = [sys.executable, "-m", "mrirecon", *argv[1:]]
        elif argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
        done = subprocess.run(argv, cwd=self.folder, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{where}: exit status {done.returncode}\n{(done.stdout + done.stderr)[-3000:]}"
        self.note_run(done.stdout)

    def make(self, n: int, argv: list[str], env: dict, where: str) -> None:
        """`make TARGET VAR=...`: the command the target runs (`make -n`), then that command."""
        dry = subprocess.run(["make", "-n", "-C", str(ROOT), *argv[1:]], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=60)
        assert dry.returncode == 0, f"{where}: {dry.stderr}"
        recipe = [line for line in dry.stdout.splitlines() if line.startswith(".venv/bin/")]
        assert len(recipe) == 1, f"{where}: make -n gives {dry.stdout}"
        target = shlex.split(recipe[0])
        if target[0] == ".venv/bin/python" and target[1:3] == ["-m", "pytest"]:
            return  # `make test`: this suite, which CI runs (.ci/run)
        assert target[0] == ".venv/bin/mrirecon", f"{where}: make runs {recipe[0]}"
        self(n, shlex.join(["mrirecon", *target[1:]]))

    def note_run(self, out: str) -> None:
        for line in out.splitlines():
            if line.startswith("run directory:"):
                self.run = Path(line.split(":", 1)[1].strip())


def test_the_readme_has_command_blocks_and_marks_the_others():
    blocks = code_blocks(README.read_text(encoding="utf-8"))
    programs = {shlex.split(c, comments=True)[0] for b in blocks for _, c in b.commands}
    assert {"make", "mrirecon"} <= programs, programs


@pytest.mark.parametrize("block", code_blocks(README.read_text(encoding="utf-8")),
                         ids=lambda b: f"{README.name}:{b.line}")
def test_every_command_of_the_block_runs_as_written(block, synthetic, tmp_path, monkeypatch, capsys):
    for name in CLONE:
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    session = Session(tmp_path, synthetic, capsys)
    for n, command in block.commands:
        session(n, command)
