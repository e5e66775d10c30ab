"""Fit a convex dual denoiser standalone, by its solver, on denoising pairs from the training split.

    mrirecon convex fit --config configs/convex/knee2d_fit.yaml --out FILE [key=value ...]

The config is an experiment config (its `data` section picks the data, read with the training split's
masks) plus a `fit:` section read only here (defaults in `FitSettings`). Pairs: input = the zero-filled
SENSE image A^H y (or the clean target plus complex Gaussian noise, `input: noisy`), target = the fully
sampled SENSE image, both as 2 real channels per ESPIRiT map. Fitting the input -> target map alone keeps
the problem convex. A random subset of pixels (`num_patches`) gives the patch matrix (float32 by default:
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
from typing import Any

import torch

from ...physics import SenseOp, complex_to_channels
from .network import gated_to_network, relu_to_network
from .patches import check_kernel_size, patch_matrix, pixel_matrix
from .problem import GROUPINGS, ConvexProblem, check_lam, sample_gates
from .prox import PREDICTS, save_weights
from .solvers import solve_gated, solve_relu

INPUTS = ("zero_filled", "noisy")
PROGRAMS = ("relu", "gated")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class FitSettings:
    input: str = "zero_filled"        # zero_filled | noisy
    noise_std: float = 0.05           # noisy: std of the complex noise added to the (max-normalised) target
    predicts: str = "residual"        # residual (target - input) | image (target)
    kernel_size: int = 3
    num_gates: int = 64               # P random gates (fewer patterns remain after dropping duplicates)
    lam: float = 1e-4                 # weight decay / group-l1 strength (loss scaled by 1/(2n))
    lam_fraction: float | None = None # if set: lam = lam_fraction * lam_max of the fitted data (overrides lam)
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
        if not (isinstance(self.noise_std, (int, float)) and self.noise_std >= 0):
            raise bad("noise_std", "must be >= 0")
        for key in ("num_gates", "num_patches"):
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


def denoising_pairs(cfg: Any, settings: FitSettings) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Patch matrix X (n, C k^2) and targets Y (n, C) (float64) sampled from the training split."""
    from ...data.datamodule import ReconDataModule

    ds = ReconDataModule(cfg).dataset("train")
    if ds.geometry.conv_dims != 2:
        raise ValueError(f"fit: the convex denoiser is 2D; data.kind={cfg.data.kind!r} (volume={cfg.data.volume}) "
                         "has 3D convolutions")
    count = len(ds) if settings.max_slices is None else min(len(ds), settings.max_slices)
    per_slice = math.ceil(settings.num_patches / count)
    g = torch.Generator().manual_seed(settings.seed)
    xs, ys = [], []
    for i in range(count):
        s = ds[i]
        clean = s.target[None]
        if clean.numel() == 0:
            raise ValueError(f"fit: {s.fname} has no fully sampled target (pre-undersampled data)")
        if settings.input == "zero_filled":
            noisy = SenseOp(s.maps[None], s.mask[None], ds.geometry.fft_ndim).H(s.kspace[None])
        else:
            noise = torch.randn(clean.shape, generator=g, dtype=clean.dtype)
            noisy = clean + settings.noise_std * noise
        inp = complex_to_channels(noisy).double()
        out = complex_to_channels(clean).double()
        X = patch_matrix(inp, settings.kernel_size)
        Y = pixel_matrix(out) - (pixel_matrix(inp) if settings.predicts == "residual" else 0)
        pick = torch.randperm(X.shape[0], generator=g)[:per_slice]
        xs.append(X[pick])
        ys.append(Y[pick])
    X, Y = torch.cat(xs)[: settings.num_patches], torch.cat(ys)[: settings.num_patches]
    return X, Y, {"slices": count, "patches": X.shape[0], "split": str(ds.root)}


def fit(cfg: Any, settings: FitSettings, out: str | Path, progress: bool = True) -> dict:
    """Solve, map to the network, write `out`; returns the report stored with the weights."""
    X, Y, data_info = denoising_pairs(cfg, settings)
    X = X.to(DTYPES[settings.dtype])
    gates = sample_gates(X, settings.num_gates, seed=settings.seed)
    problem = ConvexProblem(X, Y, gates, settings.lam, settings.group_by)
    lam_max = problem.lam_max()
    if settings.lam_fraction is not None:
        problem.lam = settings.lam_fraction * lam_max
    t0 = time.perf_counter()
    if settings.program == "relu":
        result = solve_relu(problem, progress=progress, **settings.solver)
        V, W = result.weights["V"], result.weights["W"]
        objective, violation = result.objective, result.violation
    else:
        result = solve_gated(problem, progress=progress, **settings.solver)
        objective, violation = result.objective, 0.0
    seconds = time.perf_counter() - t0
    if settings.program == "relu":
        net = relu_to_network(V, W, settings.kernel_size)
    else:
        net = gated_to_network(result.weights["U"], problem.gates, settings.kernel_size)
    info = {"settings": dataclasses.asdict(settings), "data": data_info, "patterns": problem.shape[0],
            "lam": problem.lam, "lam_max": lam_max, "gram": problem.gram,
            "hidden": net.hidden, "objective": objective,
            "optimality": result.optimality, "gap": result.gap, "lower_bound": result.lower_bound,
            "violation": violation, "repaired": result.repaired, "converged": result.converged,
            "iterations": result.iterations,
            "solve_seconds": round(seconds, 3)}
    save_weights(out, net, settings.predicts, info)
    return info
