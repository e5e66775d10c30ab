"""torchrun's launcher (the same options and rendezvous), with its own failures said in one line.

torchrun ends a failed or stopped job by raising out of its main: a `ChildFailedError` report with a
traceback when a process failed, a `SignalException` traceback when it was stopped by Ctrl-C or SIGTERM,
and it logs each signal it passes on. The processes have already said what happened (each names the failed
stage, or the checkpoint a stop wrote) and tell the launcher so (`tell_launcher`, through a file named in
the environment); `launch` runs the same launcher and returns an exit status and one line instead: a
process's own status when torchrun saw one of mrirecon's (2, 3, 4, 130, 143), else 4 (a process of the job
failed: killed, or another status), and 128 + the signal when torchrun itself was stopped. The line is None
when a process of this node has said why (its line is the one the user reads).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Sequence

# Exit statuses of mrirecon's commands that say why on their own (see docs/reliability.md).
OWN_STATUSES = (2, 3, 4, 130, 143)
# The file (named by the launcher in the processes' environment) into which a process writes the line it
# ended with, so that the launcher does not repeat it in torchrun's words.
STATUS_FILE_ENV = "MRIRECON_LAUNCH_STATUS"


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def torchrun_parser() -> argparse.ArgumentParser:
    """torchrun's own argument parser (its options, then the script or module and its arguments)."""
    from torch.distributed.run import get_args_parser

    return get_args_parser()


def tell_launcher(line: str) -> None:
    """Record the line this process ended with for `launch` (nothing when not started by it)."""
    path = os.environ.get(STATUS_FILE_ENV)
    if path:
        try:
            # one short write in append mode: lines of processes that end at once do not mix
            with open(path, "a", encoding="utf-8") as f:
                f.write(line.replace("\n", " ") + "\n")
        except OSError:
            pass  # the launcher then says it in its own words


def _quiet_agent_logs() -> None:
    """torchrun's agent logs every signal it receives and passes on ("Received SIGINT death signal",
    "Sending process N closing signal") and every process that failed ("failed (exitcode: -9)"); the
    processes say what happened, and `launch` says the rest in one line."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def launch(args: argparse.Namespace | Sequence[str]) -> tuple[int, str | None]:
    """Run torchrun with `args` (its parsed options, or its command line, e.g. ["--nproc_per_node", "2",
    "train.py", ...]); returns (exit status, one line saying why it is not 0, or None when it is 0 or a
    process has said why)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import run

    if not isinstance(args, argparse.Namespace):
        args = torchrun_parser().parse_args(list(args))
    _quiet_agent_logs()
    fd, status_path = tempfile.mkstemp(prefix="mrirecon-launch-", suffix=".status")
    os.close(fd)
    previous = os.environ.get(STATUS_FILE_ENV)
    os.environ[STATUS_FILE_ENV] = status_path  # torchrun starts the processes with this environment
    try:
        run(args)
        code, line = 0, None
    except SignalException as e:
        name = _signal_name(int(e.sigval))
        code, line = 128 + int(e.sigval), f"torchrun: stopped by {name}; every process was asked to stop"
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        codes = sorted({f.exitcode for f in e.failures.values()})
        ours = [c for c in codes if c in OWN_STATUSES]
        code = ours[-1] if ours else 4
        how = (f"exit status {first.exitcode}" if first.exitcode >= 0
               else f"killed by {_signal_name(-first.exitcode)}")
        line = (f"torchrun: {len(e.failures)} process(es) failed; the first was rank {rank} "
                f"(local rank {first.local_rank}, pid {first.pid}): {how}")
    except RendezvousError as e:  # e.g. --rdzv-endpoint unreachable: no process started
        code, line = 4, f"torchrun: the rendezvous failed ({type(e).__name__}): {e}"
    finally:
        if previous is None:
            os.environ.pop(STATUS_FILE_ENV, None)
        else:
            os.environ[STATUS_FILE_ENV] = previous
        said = Path(status_path).read_text(encoding="utf-8").strip() if Path(status_path).is_file() else ""
        Path(status_path).unlink(missing_ok=True)
    return code, (None if said else line)


__all__ = ["OWN_STATUSES", "STATUS_FILE_ENV", "launch", "tell_launcher", "torchrun_parser"]
