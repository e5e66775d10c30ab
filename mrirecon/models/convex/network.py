"""The ordinary two-layer ReLU convolutional network a convex solution maps to, and back.

Conv2d(C -> hidden, k, padding k // 2) -> ReLU -> Conv2d(hidden -> C, 1), no biases. Each nonzero column
v = V_i[:, c] of the ReLU program becomes one hidden unit with first-layer filter v / sqrt||v|| and
second-layer weight +sqrt||v|| into output channel c (W_i's columns: -sqrt||w||), Pilanci and Ergen's
mapping (ICML 2020). On the training patches, where (2 D_i - I) X v >= 0 holds, (X v)_+ = D_i X v, so the
network predicts exactly what the convex model does; its weight decay lam/2 (||u||^2 + a^2) = lam ||v||.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .patches import check_kernel_size, patch_matrix, pixels_to_images


class TwoLayerReLUConv(nn.Module):
    """Conv(C -> hidden, k) -> ReLU -> Conv(hidden -> C, 1): a fully convolutional two-layer denoiser."""

    def __init__(self, channels: int, hidden: int, kernel_size: int):
        super().__init__()
        check_kernel_size(kernel_size)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"two-layer ReLU network: hidden must be an integer >= 1, got {hidden!r}")
        self.channels, self.hidden, self.kernel_size = channels, hidden, kernel_size
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(torch.relu(self.conv1(x)))

    def weight_decay(self) -> Tensor:
        """sum over hidden units of (||u_j||^2 + ||a_j||^2) / 2 (the primal's regulariser, before lam)."""
        return (self.conv1.weight.pow(2).sum() + self.conv2.weight.pow(2).sum()) / 2

    def regularised_objective(self, images: Tensor, targets: Tensor, lam: float) -> Tensor:
        """1/(2n) ||net(images) - targets||^2 + lam * weight_decay, with n = number of pixels: the primal
        of the convex program with the same scaling (`problem.py`)."""
        n = images.shape[0] * images.shape[2] * images.shape[3]
        r = self(images) - targets
        return (r * r).sum() / (2 * n) + lam * self.weight_decay()


class GatedReLUConv(nn.Module):
    """The gated-ReLU model as a conv network (Mishkin, Sahiner and Pilanci, ICML 2022): fixed gate filters
    g_i pick, at every pixel, which linear filters U_i act: out_c = sum_i 1[g_i^T z >= 0] U_i[:, c]^T z for the
    k x k patch z. The gates are a buffer (never trained); the filters U are the parameters."""

    def __init__(self, channels: int, patterns: int, kernel_size: int):
        super().__init__()
        check_kernel_size(kernel_size)
        if not isinstance(patterns, int) or patterns < 1:
            raise ValueError(f"gated ReLU network: patterns must be an integer >= 1, got {patterns!r}")
        self.channels, self.hidden, self.kernel_size = channels, patterns, kernel_size
        self.register_buffer("gates", torch.zeros(patterns, channels, kernel_size, kernel_size))
        self.filters = nn.Conv2d(channels, patterns * channels, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pad = self.kernel_size // 2
        on = (F.conv2d(x, self.gates.to(x.dtype), padding=pad) >= 0).to(x.dtype)        # (B, P, H, W)
        feats = self.filters(x).unflatten(1, (self.hidden, self.channels))               # (B, P, C, H, W)
        return (on.unsqueeze(2) * feats).sum(1)


def gated_to_network(U: Tensor, gates: Tensor, kernel_size: int, dtype: torch.dtype = torch.float32) -> GatedReLUConv:
    """The gated program's solution U (P, d, c) with its gates (d, P) as a conv network; patterns whose
    weights are all zero (switched off by the group lasso) are dropped (one is kept if all are)."""
    P, d, c = U.shape
    if d != c * kernel_size * kernel_size or gates.shape != (d, P):
        raise ValueError(f"gated_to_network: U {tuple(U.shape)} and gates {tuple(gates.shape)} do not match "
                         f"channels*k*k = {c}*{kernel_size}^2")
    keep = (U.flatten(1).norm(dim=1) > 0).nonzero().flatten()
    if len(keep) == 0:
        keep = torch.zeros(1, dtype=torch.long, device=U.device)
    net = GatedReLUConv(c, len(keep), kernel_size).to(dtype=dtype, device=U.device)
    with torch.no_grad():
        net.gates.copy_(gates.T[keep].reshape(len(keep), c, kernel_size, kernel_size))
        # filter (i, c_out) over the input patch ordered like a Conv2d weight (C_in, k, k)
        net.filters.weight.copy_(U[keep].permute(0, 2, 1).reshape(len(keep) * c, c, kernel_size, kernel_size))
    return net


def relu_to_network(V: Tensor, W: Tensor, kernel_size: int, tol: float = 0.0,
                    dtype: torch.dtype = torch.float32) -> TwoLayerReLUConv:
    """Map a ReLU-program solution (V, W each (P, d, c), d = c * k * k) to a two-layer network.

    Columns with norm <= tol are dropped (inactive paths). A solution with no active path gives one
    zero unit (the zero function), so the module stays well formed.
    """
    P, d, c = V.shape
    if d != c * kernel_size * kernel_size:
        raise ValueError(f"relu_to_network: weights have patch dim {d}, expected channels*k*k = "
                         f"{c}*{kernel_size}^2 = {c * kernel_size**2}")
    filters, outs = [], []
    for M, sign in ((V, 1.0), (W, -1.0)):
        cols = M.permute(0, 2, 1).reshape(P * c, d)        # column (i, ch) -> row i * c + ch
        norms = cols.norm(dim=1)
        active = (norms > tol).nonzero().flatten()
        for j in active.tolist():
            root = norms[j].sqrt()
            filters.append(cols[j] / root)
            a = torch.zeros(c, dtype=M.dtype, device=M.device)
            a[j % c] = sign * root
            outs.append(a)
    net = TwoLayerReLUConv(c, max(len(filters), 1), kernel_size).to(dtype=dtype, device=V.device)
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.conv2.weight.zero_()
        if filters:
            net.conv1.weight.copy_(torch.stack(filters).reshape(len(filters), c, kernel_size, kernel_size))
            net.conv2.weight.copy_(torch.stack(outs, 1).reshape(c, len(outs), 1, 1))
    return net


def predict_images(weights: Tensor, gates: Tensor, images: Tensor, kernel_size: int) -> Tensor:
    """The convex model on new images: sum_i 1[z^T g_i >= 0] z^T U_i at every pixel's patch z.
    Pass U for the gated model, V - W for the ReLU model (gate = sign pattern as in training)."""
    X = patch_matrix(images.to(weights), kernel_size)
    D = (X @ gates.to(X) >= 0).to(X.dtype)
    rows = (D.unsqueeze(-1) * torch.einsum("nd,pdc->npc", X, weights)).sum(1)
    return pixels_to_images(rows, tuple(images.shape))
