"""torchrun's launcher (the same options and rendezvous), with its own failures said in one line.

torchrun ends a failed or stopped job by raising out of its main: a `ChildFailedError` report with a
traceback when a process failed, a `SignalException` traceback when it was stopped by Ctrl-C or SIGTERM.
The stages have already said what happened (each names the failed stage, or the checkpoint a stop wrote);
`launch` runs the same launcher and returns an exit status and one line instead: a process's own status
when torchrun saw one of mrirecon's (2, 3, 4, 130, 143), else 4 (a process of the job failed: killed, or
another status), and 128 + the signal when torchrun itself was stopped.
"""
from __future__ import annotations

import signal
from typing import Sequence


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def launch(argv: Sequence[str]) -> tuple[int, str | None]:
    """Run torchrun with `argv` (its command line, e.g. ["--nproc_per_node", "2", "train.py", ...]);
    returns (exit status, one line saying why it is not 0, or None)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(argv))
    try:
        run(args)
    except SignalException as e:
        name = _signal_name(int(e.sigval))
        return 128 + int(e.sigval), f"torchrun: stopped by {name}; every stage was asked to stop (see above)"
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        codes = sorted({f.exitcode for f in e.failures.values()})
        ours = [c for c in codes if c in (2, 3, 4, 130, 143)]
        code = ours[-1] if ours else 4
        how = (f"exit status {first.exitcode}" if first.exitcode >= 0
               else f"killed by {_signal_name(-first.exitcode)}")
        return code, (f"torchrun: {len(e.failures)} process(es) failed; the first was rank {rank} "
                      f"(local rank {first.local_rank}, pid {first.pid}): {how}")
    return 0, None


__all__ = ["launch"]
