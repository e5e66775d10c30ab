"""Reading a convex dual denoiser: which paths are active, and which linear filter acts where.

Regularisation path: the number of active patterns (nonzero groups) of the gated program as lam grows;
weight decay acts as path sparsity (Sahiner et al., ICLR 2021). Effective filters: at a pixel with patch z
the two-layer network is linear, out_c = sum_{j: z^T u_j >= 0} a_jc u_j^T z, so the filter it applies there
is sum over the active units of a_jc u_j, a (C_out, C_in, k, k) kernel per pixel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ...atomic import atomic_path
from .network import TwoLayerReLUConv
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


def effective_filters(net: TwoLayerReLUConv, image: Tensor, pixels: Sequence[tuple[int, int]]) -> Tensor:
    """(len(pixels), C_out, C_in, k, k): the linear filter the network applies at each (y, x) of `image`
    (C, H, W). Applied to that pixel's patch it reproduces the network's output there."""
    c, h, w = image.shape
    k = net.kernel_size
    X = patch_matrix(image[None].to(net.conv1.weight), k)           # (H*W, C k^2)
    U = net.conv1.weight.reshape(net.hidden, -1)                      # (hidden, C k^2)
    A = net.conv2.weight.reshape(c, net.hidden)                       # (C_out, hidden)
    out = []
    for y, x in pixels:
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"effective_filters: pixel {(y, x)} is outside the image {(h, w)}")
        active = (X[y * w + x] @ U.T >= 0).to(U.dtype)                # (hidden,)
        out.append((A * active) @ U)                                  # (C_out, C k^2)
    return torch.stack(out).reshape(len(pixels), c, c, k, k)


def plot_regularisation_path(rows: list[dict], path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogx([r["lam"] for r in rows], [r["active_patterns"] for r in rows], "o-")
    ax.set_xlabel("lam (group-l1 / weight decay)")
    ax.set_ylabel("active patterns (paths)")
    ax.set_title("regularisation path")
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


def main(argv: list[str] | None = None) -> int:
    """Figures for a fitted prox: the regularisation path on (a subset of) its fit's patches, and the
    effective filters at three pixels of the first training slice's input image."""
    import argparse
    import math

    from .fit import denoising_pairs, read_fit_config
    from .prox import load_weights
    from .problem import sample_gates

    p = argparse.ArgumentParser(description="regularisation path and effective-filter figures of a convex prox")
    p.add_argument("--config", required=True, help="the fit config (configs/convex/*_fit.yaml)")
    p.add_argument("--weights", required=True, help="weights written by mrirecon.models.convex.fit")
    p.add_argument("--out", required=True, help="folder for path.png, filters.png and path.json")
    p.add_argument("--patches", type=int, default=400, help="patches for the regularisation path")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg, settings = read_fit_config(args.config, args.overrides)
    payload = load_weights(args.weights)
    net = TwoLayerReLUConv(payload["channels"], payload["hidden"], payload["kernel_size"])
    net.load_state_dict(payload["state_dict"])
    small = settings.__class__(**{**settings.__dict__, "num_patches": args.patches})
    X, Y, _ = denoising_pairs(cfg, small)
    problem = ConvexProblem(X, Y, sample_gates(X, settings.num_gates, settings.seed), 0.0, settings.group_by)
    _, grad = problem.loss_and_grad(problem.zeros())
    lam_max = float(problem.group_norms(grad).max())  # above it every path is off
    lams = [lam_max * 10 ** (-4 + 4.2 * i / 9) for i in range(10)]
    rows = regularisation_path(problem, lams)
    out = Path(args.out)
    plot_regularisation_path(rows, out / "path.png")
    from ...atomic import write_text
    import json

    write_text(out / "path.json", json.dumps(rows, indent=2) + "\n")
    # effective filters on the first training slice's (zero-filled or noisy) input
    from ...physics import SenseOp, complex_to_channels
    from ...data.datamodule import ReconDataModule

    s = ReconDataModule(cfg).dataset("train")[0]
    image = complex_to_channels(SenseOp(s.maps[None], s.mask[None], 2).H(s.kspace[None]))[0].float()
    h, w = image.shape[-2:]
    pixels = [(h // 2, w // 2), (h // 3, w // 2), (h // 2, w // 5)]
    plot_effective_filters(image, effective_filters(net, image, pixels), pixels, out / "filters.png")
    print(f"wrote {out / 'path.png'}, {out / 'path.json'}, {out / 'filters.png'} (lam_max {lam_max:.3g}; "
          f"active patterns {[r['active_patterns'] for r in rows]})")
    return 0 if all(math.isfinite(r["objective"]) for r in rows) else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
