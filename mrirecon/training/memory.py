"""Peak memory of one training step, measured honestly on GPU and on CPU.

On CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (everything the caching
allocator handed out on the device during the step, plus what was already allocated).

On CPU there is no allocator statistic, so two exact accountings are made while the step runs:
  - saved activations (`peak_saved_mib`): every tensor autograd saves for backward passes through
    `torch.autograd.graph.saved_tensors_hooks`; its storage is counted when packed and released when
    autograd drops the packed object (a small wrapper whose finaliser decrements the count). Tensors
    sharing a storage are counted once; parameters, buffers and the given inputs are not activations
    and are excluded. Blind spot: `torch.utils.checkpoint` installs its own hooks inside checkpointed
    regions and keeps the unroll inputs itself, so this count does not see what checkpointing stores.
  - all tensors allocated during the step (`peak_live_mib`): a TorchDispatchMode sees every operator
    (forward, backward, optimizer) and counts each new storage it returns until the storage is freed
    (weak-reference finaliser). This includes gradients, optimizer temporaries, transient workspaces
    of the operators' outputs and checkpointing's stored inputs and recomputations; it excludes memory
    an operator uses internally without returning it, and Python/allocator overheads.
`peak_mib` = parameters + buffers + optimizer state and inputs present before the step + peak_live_mib.
Both devices also report `before_step_mib` (what was allocated when the step started: on CUDA the
allocator's count, on CPU that baseline) and `peak_step_mib` = peak_mib - before_step_mib (what the step
itself added at its peak: activations, gradients, temporaries).
For a cross-check, `peak_rss_mib()` gives the process's peak resident set size; run one configuration
per fresh process to use it.
"""
from __future__ import annotations

import resource
import sys
import weakref
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MIB = 2**20


def _storage(t: Tensor) -> tuple[int, int] | None:
    """(data pointer, bytes) of a tensor's storage, or None for tensors without a plain storage."""
    try:
        s = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    return s.data_ptr(), s.nbytes()


class _Packed:
    """What autograd keeps instead of a saved tensor while the meter runs; its finaliser releases the count."""

    __slots__ = ("tensor", "release")

    def __init__(self, tensor: Tensor, release: Callable[[], None] | None):
        self.tensor, self.release = tensor, release

    def __del__(self) -> None:
        if self.release is not None:
            self.release()


class SavedTensorMeter:
    """Context manager: current and peak bytes of distinct storages autograd holds for backward."""

    def __init__(self, exclude: Iterable[Tensor] = ()):
        self.exclude = {k[0] for k in map(_storage, exclude) if k is not None}
        self.refs: dict[int, int] = {}
        self.current = self.peak = 0

    def _pack(self, t: Tensor) -> _Packed:
        key = _storage(t)
        if key is None or key[0] in self.exclude or key[1] == 0:
            return _Packed(t, None)
        ptr, nbytes = key
        if self.refs.get(ptr, 0) == 0:
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        self.refs[ptr] = self.refs.get(ptr, 0) + 1
        return _Packed(t, lambda: self._release(ptr, nbytes))

    def _release(self, ptr: int, nbytes: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            del self.refs[ptr]
            self.current -= nbytes

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda p: p.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


class LiveTensorMeter(TorchDispatchMode):
    """Context manager: current and peak bytes of storages created by operators while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Outputs sharing a storage with an input are views or in-place results, not new memory.
        inputs = {k[0] for k in (_storage(a) for a in tree_leaves((args, kwargs)) if isinstance(a, Tensor)) if k}
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            key = _storage(t)
            if key is None or key[1] == 0 or key[0] in inputs or key[0] in self.live:
                continue
            ptr, nbytes = key
            self.live[ptr] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(t.untyped_storage(), self._free, ptr)
        return out


def _bytes(tensors: Iterable[Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        key = _storage(t)
        if key is not None:
            seen[key[0]] = key[1]
    return sum(seen.values())


def _optimizer_tensors(optimizers: Sequence[Any]) -> list[Tensor]:
    out = []
    for opt in optimizers:
        opt = getattr(opt, "optimizer", opt)  # unwrap Lightning's LightningOptimizer
        for state in opt.state.values():
            out += [v for v in state.values() if isinstance(v, Tensor)]
    return out


def measure_step_memory(fn: Callable[[], Any], modules: Sequence[nn.Module] = (),
                        optimizers: Sequence[Any] = (), inputs: Sequence[Tensor] = (),
                        device: torch.device | str | None = None) -> dict[str, float]:
    """Run `fn()` (one training step) once and return its memory in MiB.

    Keys: peak_mib (the number to report), before_step_mib, peak_step_mib (= peak_mib - before_step_mib),
    peak_saved_mib, params_mib, buffers_mib, grads_mib (after the step), optimizer_state_mib (after the
    step), inputs_mib; on CPU also peak_live_mib (= peak_step_mib); on CUDA cuda_peak_mib (= peak_mib).
    Gradients are cleared first (every strategy's step starts with zero_grad(set_to_none=True)), so the
    gradients the step creates are part of its peak.
    """
    params = [p for m in modules for p in m.parameters()]
    buffers = [b for m in modules for b in m.buffers()]
    for p in params:
        p.grad = None
    if device is None:
        device = params[0].device if params else (inputs[0].device if inputs else torch.device("cpu"))
    device = torch.device(device)
    state_before = _bytes(_optimizer_tensors(optimizers))
    result = {"params_mib": _bytes(params) / MIB, "buffers_mib": _bytes(buffers) / MIB,
              "inputs_mib": _bytes(inputs) / MIB}
    with SavedTensorMeter(exclude=[*params, *buffers, *inputs]) as saved:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            result["before_step_mib"] = torch.cuda.memory_allocated(device) / MIB
            fn()
            torch.cuda.synchronize(device)
            result["cuda_peak_mib"] = result["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
            result["peak_step_mib"] = result["peak_mib"] - result["before_step_mib"]
        else:
            result["before_step_mib"] = (_bytes([*params, *buffers, *inputs]) + state_before) / MIB
            with LiveTensorMeter() as live:
                fn()
            result["peak_step_mib"] = result["peak_live_mib"] = live.peak / MIB
            result["peak_mib"] = result["before_step_mib"] + result["peak_live_mib"]
    result["peak_saved_mib"] = saved.peak / MIB
    result["grads_mib"] = _bytes(p.grad for p in params if p.grad is not None) / MIB
    result["optimizer_state_mib"] = _bytes(_optimizer_tensors(optimizers)) / MIB
    return result


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024
