"""A pipeline stage that cannot go on says which stage failed: one that died (its process has ended), one that
is stopped (SIGSTOP: ended with SIGKILL, so every stage ends within the timeout), one that gave up (its reason,
left in the rendezvous store), or one that did not answer within `train.pipeline.timeout_s`. Waits on links
and collectives fail into a PipelineError through `Faults`, never into a backend traceback."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch.distributed as dist

from ..training.guards import NonFiniteError
from .context import Layout, Peers, default_store

# Keys in the rendezvous store: a stop request, the step every stage stops before, a stage's reason for giving up.
STOP_REQUESTED, STOP_AT, GAVE_UP = "mrirecon/stop_requested", "mrirecon/stop_at", "mrirecon/gave_up/"


class PipelineError(RuntimeError):
    """A stage could not go on (another stage died, stopped answering, or failed); names the stage."""


class Faults:
    """Turns a failed wait into a PipelineError naming the stage that failed, looking at the other
    processes first (died, stopped) and ending a stopped one so that every stage ends."""

    def __init__(self, layout: Layout, peers: Peers, timeout_s: float):
        self.layout, self.peers, self.timeout_s = layout, peers, timeout_s

    def _me(self) -> str:
        return f"pipeline stage {self.layout.stage} (rank {self.layout.rank})"

    def _name(self, rank: int) -> str:
        return f"stage {rank // self.layout.replicas} (rank {rank})"

    def _what_happened(self, ranks: dict[int, str]) -> str:
        parts = []
        for rank, state in sorted(ranks.items()):
            pid = self.peers.processes[rank][1]
            reason = self._gave_up(rank) if state == "ended" else None
            if reason:
                parts.append(f"{self._name(rank)} has stopped: {reason}")
            elif state == "ended":
                parts.append(f"{self._name(rank)} has died (its process {pid} has ended)")
            else:
                ended = "; it is ended now (SIGKILL)" if self.peers.end(rank) else ""
                parts.append(f"{self._name(rank)} stopped answering: its process {pid} is stopped (SIGSTOP){ended}")
        return "; ".join(parts)

    def _gave_up(self, rank: int) -> str | None:
        """The reason a stage that ended on purpose (a PipelineError of its own) left in the store."""
        try:
            store = default_store()
            return store.get(GAVE_UP + str(rank)).decode() if store.check([GAVE_UP + str(rank)]) else None
        except Exception:  # noqa: BLE001 - the store is gone with the job: no reason to tell
            return None

    def _announce(self, error: PipelineError) -> PipelineError:
        """Leave this stage's reason in the store (a stage that sees it ended then says why), and return it."""
        try:
            default_store().set(GAVE_UP + str(self.layout.rank), str(error).split(": ", 1)[-1])
        except Exception:  # noqa: BLE001 - best effort: the error is raised anyway
            pass
        return error

    def failed_peers(self) -> PipelineError | None:
        """A PipelineError when another stage's process has ended or is stopped, else None."""
        failed = self.peers.failed()
        return PipelineError(f"{self._me()}: {self._what_happened(failed)}") if failed else None

    def error(self, what: str, error: BaseException | None, peer_rank: int | None = None) -> PipelineError:
        """The PipelineError for a wait (`what`, e.g. "receiving image 3 from stage 0") that failed with `error`."""
        detail = backend_detail(error)
        failed = self.peers.failed()
        deadline = time.monotonic() + 2.0
        while not failed and detail == "its connection closed" and time.monotonic() < deadline:
            time.sleep(0.05)  # a killed peer's sockets close while its process is still exiting
            failed = self.peers.failed()
        if failed:
            return self._announce(PipelineError(f"{self._me()}: {what} failed: {self._what_happened(failed)}"))
        who = f"{self._name(peer_rank)} " if peer_rank is not None else "another stage "
        return self._announce(PipelineError(
            f"{self._me()}: {what} failed: {who}died or did not answer within "
            f"train.pipeline.timeout_s={self.timeout_s:g} s" + (f" ({detail})" if detail else "")))

    def collective(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a collective (gather, broadcast, all-reduce); a failure becomes a PipelineError naming the stage."""
        try:
            return fn()
        except (RuntimeError, dist.DistError) as e:
            if isinstance(e, (PipelineError, NonFiniteError)):
                raise
            raise self.error(what, e) from None

    def on_signal(self, signum: int) -> None:
        """A signal while another stage has died or is stopped (torchrun stopping the rest): say which."""
        error = self.failed_peers()
        if error is not None:
            raise error


def backend_detail(error: BaseException | None) -> str:
    """What a backend error says, in words (gloo's messages carry source locations and advice)."""
    if error is None:
        return ""
    text = str(error)
    lowered = text.lower()
    if "connection reset" in lowered or "connection closed" in lowered or "broken pipe" in lowered:
        return "its connection closed"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    first = (text.splitlines() or [""])[0]
    return first.split("] ", 1)[-1][:200]



__all__ = ["PipelineError", "Faults", "STOP_REQUESTED", "STOP_AT", "GAVE_UP", "backend_detail"]
