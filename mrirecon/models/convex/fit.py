"""Fit a convex dual denoiser standalone, by its solver, on denoising pairs from the training split.

    mrirecon convex fit --config configs/convex/knee2d_fit.yaml --out FILE [key=value ...]

The config is an experiment config (its `data` section picks the data, read with the training split's
masks) plus a `fit:` section read only here (defaults in `FitSettings`). Pairs: input = the zero-filled
SENSE image A^H y (`input: zero_filled`), the clean target plus complex Gaussian noise (`noisy`), or the images
the prox sees inside a PGD unroll (`unroll`: the data-consistency iterates v_k = v_{k-1} - alpha A^H (A v_{k-1}
- y) from v_0 = A^H y, k = 1..`unroll_steps`, alpha = `step_size`, the identity as the prox between them);
target = the reference image (`data.target`), both as 2 real channels per ESPIRiT map. Fitting the input ->
target map alone keeps the problem convex. A prox fitted to the zero-filled image learns that image's error;
inside the unrolls its inputs are DC-updated images, and such a prox lowered the PSNR at every unroll
(docs/convex.md, "What a standalone fit can learn here"). `lam_path` solves several lam (fractions of
lam_max) and keeps the one that denoises the val split best.
A random subset of pixels (`num_patches`) gives the patch matrix (float32 by default:
the solvers accumulate in float64). `program: relu` solves the exact ReLU program by the augmented
Lagrangian and maps it to the two-layer ReLU network; `program: gated` solves the gated program (R-FISTA,
matrix-free at scale) and keeps the gated-ReLU network (fixed gates). The cone decomposition would turn a
gated solution into a feasible ReLU one, but at this size its shifts are huge (a 5x5, 256-gate fit: ReLU
objective 166 against the gated 0.0062, and float32 cancellation between the V and W units), so the gated
network itself is the prox. Written atomically. `lam_fraction` sets lam = lam_fraction * lam_max (the closed-form threshold above
which the optimum is zero) instead of `lam`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ...physics import SenseOp, complex_to_channels
from .network import gated_to_network, relu_to_network
from .patches import check_kernel_size, patch_matrix, pixel_matrix
from .problem import GROUPINGS, ConvexProblem, check_lam, sample_gates
from .prox import PREDICTS, save_weights
from .solvers import solve_gated, solve_relu

INPUTS = ("zero_filled", "noisy", "unroll")
PROGRAMS = ("relu", "gated")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class FitSettings:
    input: str = "zero_filled"        # zero_filled | noisy | unroll
    noise_std: float = 0.05           # noisy: std of the complex noise added to the (max-normalised) target
    unroll_steps: int = 4             # unroll: K data-consistency iterates per slice (patches drawn from all)
    step_size: float = 1.0            # unroll: the PGD step alpha of those iterates
    predicts: str = "residual"        # residual (target - input) | image (target)
    kernel_size: int = 3
    num_gates: int = 64               # P random gates (fewer patterns remain after dropping duplicates)
    paired_gates: bool = False        # P / 2 random gates and their negatives: every linear filter is in the model
    lam: float = 1e-4                 # weight decay / group-l1 strength (loss scaled by 1/(2n))
    lam_fraction: float | None = None # if set: lam = lam_fraction * lam_max of the fitted data (overrides lam)
    lam_path: list | None = None      # fractions of lam_max, solved largest first (warm starts); the network that
                                      # denoises the val split best is kept (overrides lam and lam_fraction)
    program: str = "relu"             # relu (augmented Lagrangian) | gated (R-FISTA; the gated-ReLU network)
    dtype: str = "float32"            # of the patch matrix (sums are float64 either way)
    group_by: str = "channel"         # channel: exactly a weight-decayed two-layer ReLU net; pattern
    num_patches: int = 2000           # pixels (patches) sampled from the training split
    max_slices: int | None = None     # use at most this many training slices (first ones)
    seed: int = 0
    solver: dict = field(default_factory=dict)  # options of solve_relu / solve_gated (tol, gap_tol, time_limit, ...)

    def check(self) -> "FitSettings":
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"fit.{key}: {why}, got {getattr(self, key)!r}")

        if self.input not in INPUTS:
            raise bad("input", f"must be one of {INPUTS}")
        if self.predicts not in PREDICTS:
            raise bad("predicts", f"must be one of {PREDICTS}")
        if self.group_by not in GROUPINGS:
            raise bad("group_by", f"must be one of {GROUPINGS}")
        if self.program not in PROGRAMS:
            raise bad("program", f"must be one of {PROGRAMS}")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"must be one of {tuple(DTYPES)}")
        if self.lam_fraction is not None and not (isinstance(self.lam_fraction, (int, float))
                                                  and 0 < self.lam_fraction <= 1):
            raise bad("lam_fraction", "must be a number in (0, 1] or null")
        if self.lam_path is not None and not (isinstance(self.lam_path, list) and self.lam_path and all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in self.lam_path)):
            raise bad("lam_path", "must be a non-empty list of numbers in (0, 1] or null")
        if not (isinstance(self.noise_std, (int, float)) and self.noise_std >= 0):
            raise bad("noise_std", "must be >= 0")
        if isinstance(self.step_size, bool) or not (isinstance(self.step_size, (int, float)) and self.step_size > 0):
            raise bad("step_size", "must be a number > 0")
        if not isinstance(self.paired_gates, bool):
            raise bad("paired_gates", "must be true or false")
        for key in ("num_gates", "num_patches", "unroll_steps"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(key, "must be an integer >= 1")
        if self.max_slices is not None and (not isinstance(self.max_slices, int) or self.max_slices < 1):
            raise bad("max_slices", "must be an integer >= 1 or null")
        try:
            check_kernel_size(self.kernel_size)
            check_lam(self.lam)
        except ValueError as e:
            raise ValueError(f"fit: {e}") from None
        return self


def read_fit_config(path: str | Path, overrides: list[str]) -> tuple[Any, FitSettings]:
    """(experiment Config, FitSettings) from a YAML file (and the files it inherits, `base:`) with an extra
    `fit:` section; overrides are dotted `key=value` pairs, `fit.*` ones going to the fit settings."""
    from ...config import ConfigError, config_from_layers, parse_yaml, read_config_file

    layers = read_config_file(path)
    fit: dict[str, Any] = {}
    for layer in layers:  # the farthest base first: a file's fit settings override its bases'
        fit.update(layer.pop("fit", None) or {})
    rest = []
    for text in overrides:
        key, _, raw = text.partition("=")
        if key.startswith("fit."):
            fit[key[4:]] = parse_yaml(raw, f"override {text!r}")
        else:
            rest.append(text)
    names = {f.name for f in dataclasses.fields(FitSettings)}
    unknown = sorted(set(fit) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown fit setting(s) {['fit.' + k for k in unknown]}; valid: {sorted(names)}")
    cfg = config_from_layers(layers, rest)
    fit = {k: dict(v) if isinstance(v, dict) else v for k, v in fit.items()}  # plain dicts (stored with the weights)
    return cfg, FitSettings(**fit).check()


def unroll_inputs(A: SenseOp, y: torch.Tensor, steps: int, step_size: float) -> list[torch.Tensor]:
    """The K images a PGD unroll's prox sees when every prox is the identity: v_k = v_{k-1} - alpha A^H (A v_{k-1}
    - y) from v_0 = A^H y (the data-consistency iterates, i.e. Landweber's iteration towards the SENSE solution)."""
    from ..unrolled import gradient_step

    x, out = A.H(y), []
    for _ in range(steps):
        x = gradient_step(x, A, y, step_size)
        out.append(x)
    return out


def image_pairs(cfg: Any, settings: FitSettings, split: str = "train") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per slice of `split` (at most max_slices): the input images (K, C, H, W) (K = 1, or unroll_steps for
    `input: unroll`) and the target (1, C, H, W), as real channels in float64."""
    from ...data.datamodule import ReconDataModule

    ds = ReconDataModule(cfg).dataset(split)
    if ds.geometry.conv_dims != 2:
        raise ValueError(f"fit: the convex denoiser is 2D; data.kind={cfg.data.kind!r} (volume={cfg.data.volume}) "
                         "has 3D convolutions")
    count = len(ds) if settings.max_slices is None else min(len(ds), settings.max_slices)
    g = torch.Generator().manual_seed(settings.seed)
    for i in range(count):
        s = ds[i]
        clean = s.target[None]
        if clean.numel() == 0:
            raise ValueError(f"fit: {s.fname} has no fully sampled target (pre-undersampled data)")
        A = SenseOp(s.maps[None], s.mask[None], ds.geometry.fft_ndim)
        if settings.input == "noisy":
            inputs = [clean + settings.noise_std * torch.randn(clean.shape, generator=g, dtype=clean.dtype)]
        elif settings.input == "zero_filled":
            inputs = [A.H(s.kspace[None])]
        else:
            inputs = unroll_inputs(A, s.kspace[None], settings.unroll_steps, settings.step_size)
        yield complex_to_channels(torch.cat(inputs)).double(), complex_to_channels(clean).double()


def denoising_pairs(cfg: Any, settings: FitSettings) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Patch matrix X (n, C k^2) and targets Y (n, C) (float64) sampled from the training split."""
    pairs = list(image_pairs(cfg, settings, "train"))
    per_slice = math.ceil(settings.num_patches / len(pairs))
    g = torch.Generator().manual_seed(settings.seed + 1)  # not the noise's generator: another stream
    xs, ys = [], []
    for inp, clean in pairs:
        X = patch_matrix(inp, settings.kernel_size)
        Y = pixel_matrix(clean).repeat(inp.shape[0], 1) - (pixel_matrix(inp) if settings.predicts == "residual" else 0)
        pick = torch.randperm(X.shape[0], generator=g)[:per_slice]
        xs.append(X[pick])
        ys.append(Y[pick])
    X, Y = torch.cat(xs)[: settings.num_patches], torch.cat(ys)[: settings.num_patches]
    return X, Y, {"slices": len(pairs), "patches": X.shape[0], "split": "train", "input": settings.input}


@torch.no_grad()
def held_out_psnr_gain(net: torch.nn.Module, predicts: str, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """10 log10(MSE(input) / MSE(prox(input))) over held-out pairs, both against the target, every pixel of every
    input image: > 0 when the prox denoises them, < 0 when it makes them worse."""
    before = after = 0.0
    for inp, clean in pairs:
        out = net(inp.to(torch.float32)).double()  # the net is float32; the residual adds to the exact input
        z = inp + out if predicts == "residual" else out
        before += float((inp - clean).pow(2).sum())
        after += float((z - clean).pow(2).sum())
    return 10 * math.log10(before / after)


def fit(cfg: Any, settings: FitSettings, out: str | Path, progress: bool = True) -> dict:
    """Solve, map to the network, write `out`; returns the report stored with the weights.

    With `lam_path`, every lam on the path is solved (each from the previous solution) and scored by
    `held_out_psnr_gain` on the val split's pairs (the same kind of input); the best is written and the report
    lists the whole path. The solver settings (time_limit among them) apply to each solve."""
    X, Y, data_info = denoising_pairs(cfg, settings)
    X = X.to(DTYPES[settings.dtype])
    gates = sample_gates(X, settings.num_gates, seed=settings.seed, paired=settings.paired_gates)
    problem = ConvexProblem(X, Y, gates, settings.lam, settings.group_by)
    lam_max = problem.lam_max()
    if settings.lam_path is not None:
        lams = [f * lam_max for f in sorted(settings.lam_path, reverse=True)]
        held_out = list(image_pairs(cfg, dataclasses.replace(settings, max_slices=None), "val"))
    else:
        lams = [settings.lam_fraction * lam_max if settings.lam_fraction is not None else settings.lam]
        held_out = []
    path, best, start = [], None, None
    for lam in lams:
        problem.lam = lam
        t0 = time.perf_counter()
        if settings.program == "relu":  # each lam from the previous one's solution, as the gated path
            warm = {"V0": start[0], "W0": start[1]} if start is not None else {}
            result = solve_relu(problem, progress=progress, **warm, **settings.solver)
            start = (result.weights["V"], result.weights["W"])
            net = relu_to_network(*start, settings.kernel_size)
            violation = result.violation
        else:
            result = solve_gated(problem, U0=start, progress=progress, **settings.solver)
            start = result.weights["U"]
            net = gated_to_network(start, problem.gates, settings.kernel_size)
            violation = 0.0
        point = {"lam": lam, "lam_fraction": lam / lam_max, "hidden": net.hidden, "objective": result.objective,
                 "optimality": result.optimality, "gap": result.gap, "lower_bound": result.lower_bound,
                 "violation": violation, "repaired": result.repaired, "converged": result.converged,
                 "iterations": result.iterations, "solve_seconds": round(time.perf_counter() - t0, 3)}
        if held_out:
            point["val_psnr_gain_db"] = held_out_psnr_gain(net, settings.predicts, held_out)
        path.append(point)
        if best is None or point.get("val_psnr_gain_db", 0.0) > best[0].get("val_psnr_gain_db", 0.0):
            best = (point, net)
    point, net = best
    info = {"settings": dataclasses.asdict(settings), "data": data_info, "patterns": problem.shape[0],
            "lam_max": lam_max, "gram": problem.gram, "zero_objective": float((problem.Y * problem.Y).sum()) / (2 * problem.n),
            **point, "solve_seconds": round(sum(q["solve_seconds"] for q in path), 3)}
    if held_out:
        info["path"] = path
    save_weights(out, net, settings.predicts, info)
    return info
