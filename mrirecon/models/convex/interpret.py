"""Reading a convex dual denoiser: which paths are active, and which linear filter acts where.

Regularisation path: the number of active patterns (nonzero groups) of the gated program as lam grows;
weight decay acts as path sparsity (Sahiner et al., ICLR 2021). Effective filters: at a pixel with patch z
the two-layer network is linear, out_c = sum_{j: z^T u_j >= 0} a_jc u_j^T z, so the filter it applies there
is sum over the active units of a_jc u_j, a (C_out, C_in, k, k) kernel per pixel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ...atomic import atomic_path
from .network import GatedReLUConv, TwoLayerReLUConv
from .patches import patch_matrix
from .problem import ConvexProblem, check_lam
from .solvers import solve_gated


def regularisation_path(problem: ConvexProblem, lams: Sequence[float], tol: float = 1e-6,
                        max_iter: int = 5000, threshold: float = 1e-8) -> list[dict]:
    """Solve the gated program for each lam (largest first, warm-started) and count the active patterns
    (groups with norm > threshold). Returns [{lam, active_patterns, active_groups, objective}] in the
    order of `lams`."""
    rows, U = {}, None
    for lam in sorted((check_lam(v) for v in lams), reverse=True):
        problem.lam = lam
        r = solve_gated(problem, U0=U, tol=tol, max_iter=max_iter)
        U = r.weights["U"]
        norms = problem.group_norms(U)
        pattern_norms = norms if norms.dim() == 1 else norms.norm(dim=-1)
        rows[lam] = {"lam": lam, "active_patterns": int((pattern_norms > threshold).sum()),
                     "active_groups": int((norms > threshold).sum()), "objective": r.objective,
                     "converged": r.converged}
    return [rows[float(v)] for v in lams]


def effective_filters(net: TwoLayerReLUConv | GatedReLUConv, image: Tensor, pixels: Sequence[tuple[int, int]]) -> Tensor:
    """(len(pixels), C_out, C_in, k, k): the linear filter the network applies at each (y, x) of `image`
    (C, H, W). Applied to that pixel's patch it reproduces the network's output there. For the gated
    network the units on at a pixel are those whose gate sees the patch at >= 0; their filters add up."""
    c, h, w = image.shape
    k = net.kernel_size
    gated = isinstance(net, GatedReLUConv)
    weight = net.filters.weight if gated else net.conv1.weight
    X = patch_matrix(image[None].to(weight), k)                       # (H*W, C k^2)
    if gated:
        G = net.gates.reshape(net.hidden, -1).to(weight)               # (P, C k^2) gates
        U = weight.reshape(net.hidden, c, -1)                          # (P, C_out, C k^2) filters
    else:
        U = weight.reshape(net.hidden, -1)                             # (hidden, C k^2)
        A = net.conv2.weight.reshape(c, net.hidden)                    # (C_out, hidden)
    out = []
    for y, x in pixels:
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"effective_filters: pixel {(y, x)} is outside the image {(h, w)}")
        z = X[y * w + x]
        if gated:
            out.append(((z @ G.T >= 0).to(U.dtype)[:, None, None] * U).sum(0))   # (C_out, C k^2)
        else:
            active = (z @ U.T >= 0).to(U.dtype)                        # (hidden,)
            out.append((A * active) @ U)                               # (C_out, C k^2)
    return torch.stack(out).reshape(len(pixels), c, c, k, k)


def plot_regularisation_path(rows: list[dict], path: str | os.PathLike, fitted: list[dict] | None = None) -> Path:
    """Active patterns against lam; with `fitted` (the weights' own lam path, each point with
    `val_psnr_gain_db`), a second panel: the held-out denoising gain of each fitted lam."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if fitted else 1, figsize=(9 if fitted else 4.5, 3.2), squeeze=False)
    ax = axes[0][0]
    ax.semilogx([r["lam"] for r in rows], [r["active_patterns"] for r in rows], "o-")
    ax.set_xlabel("lam (group-l1 / weight decay)")
    ax.set_ylabel("active patterns (paths)")
    ax.set_title("regularisation path")
    if fitted:
        ax = axes[0][1]
        ax.semilogx([r["lam"] for r in fitted], [r["val_psnr_gain_db"] for r in fitted], "o-", color="C1")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xlabel("lam of the fitted prox")
        ax.set_ylabel("held-out gain (dB): MSE(in) / MSE(prox(in))")
        ax.set_title("denoising on the val split")
    fig.tight_layout()
    return _save(fig, path)


def plot_effective_filters(image: Tensor, filters: Tensor, pixels: Sequence[tuple[int, int]],
                           path: str | os.PathLike, channel_names: Sequence[str] = ("re", "im")) -> Path:
    """The image's magnitude with the chosen pixels marked, and each pixel's (C_out x C_in) filters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cout, cin = filters.shape[:3]
    names = list(channel_names) if len(channel_names) == cout else [str(i) for i in range(cout)]
    fig, axes = plt.subplots(cout, 1 + n * cin, figsize=(2 * (1 + n * cin), 2 * cout), squeeze=False)
    mag = image.detach().float().pow(2).sum(0).sqrt().cpu()
    vmax = float(filters.detach().abs().max()) or 1.0
    for row in range(cout):
        ax = axes[row][0]
        ax.imshow(mag, cmap="gray")
        for j, (y, x) in enumerate(pixels):
            ax.plot(x, y, "o", ms=5, mfc="none", mec=f"C{j}")
        ax.set_axis_off()
        for j in range(n):
            for ci in range(cin):
                ax = axes[row][1 + j * cin + ci]
                ax.imshow(filters[j, row, ci].detach().float().cpu(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_title(f"px{j} {names[ci] if cin == cout else ci}->{names[row]}", fontsize=8, color=f"C{j}")
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("effective linear filters at chosen pixels", fontsize=9)
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def write_interpretation(cfg: Any, settings: Any, weights: str | os.PathLike, out: str | os.PathLike,
                         num_patches: int = 400) -> dict:
    """Figures for a fitted prox (`cfg`, `settings`: its fit config, `read_fit_config`): the regularisation
    path on (a subset of) its fit's patches (beside it the held-out gain of the lams the fit tried, when its
    weights hold that path), and the effective filters at three pixels of the first training slice's input
    image (the fit's own kind of input). Writes OUT/path.png, path.json and filters.png; returns
    {"rows", "lam_max", "paths"}."""
    from .fit import denoising_pairs, image_pairs
    from .prox import NETWORKS, load_weights
    from .problem import sample_gates

    payload = load_weights(weights)
    net = NETWORKS[payload.get("network", "relu")](payload["channels"], payload["hidden"], payload["kernel_size"])
    net.load_state_dict(payload["state_dict"])
    small = settings.__class__(**{**settings.__dict__, "num_patches": num_patches})
    X, Y, _ = denoising_pairs(cfg, small)
    problem = ConvexProblem(X, Y, sample_gates(X, settings.num_gates, settings.seed, settings.paired_gates), 0.0, settings.group_by)
    lam_max = problem.lam_max()  # above it every path is off
    lams = [lam_max * 10 ** (-4 + 4.2 * i / 9) for i in range(10)]
    rows = regularisation_path(problem, lams)
    out = Path(out)
    fitted = payload.get("info", {}).get("path")
    plot_regularisation_path(rows, out / "path.png", fitted)
    from ...atomic import write_text
    import json

    write_text(out / "path.json", json.dumps({"lam_max": lam_max, "path_on_subset": rows, "fitted_path": fitted,
                                              "fitted_lam": payload.get("info", {}).get("lam")}, indent=2) + "\n")
    # effective filters on the first training slice's input (zero-filled, noisy or the first unroll input)
    inputs, _ = next(image_pairs(cfg, small, "train"))
    image = inputs[0].float()
    h, w = image.shape[-2:]
    pixels = [(h // 2, w // 2), (h // 3, w // 2), (h // 2, w // 5)]
    plot_effective_filters(image, effective_filters(net, image, pixels), pixels, out / "filters.png")
    return {"rows": rows, "lam_max": lam_max, "paths": [out / "path.png", out / "path.json", out / "filters.png"]}
