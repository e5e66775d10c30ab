"""Certified operator norms of convolutions, and the convolution normalised by them (`NormBoundedConv`).

A bound on ||conv_W|| that holds for inputs of every size, computed from the kernel W alone by a branch
and bound over frequencies (`certified_conv_norms`); Lipschitz-bounded proxes divide each convolution by
it, which makes them invertible by fixed-point iteration (see prox/resnet.py).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import conv_class

_CONV = {2: F.conv2d, 3: F.conv3d}
_CONV_T = {2: F.conv_transpose2d, 3: F.conv_transpose3d}
# Relative slack added to every certified norm: covers the float32 rounding of the normalised weights
# (entrywise 2^-24; at most ~sqrt(taps * channels) times that on the operator norm) with room to spare.
_ROUNDING = 1e-5
# The certificates evaluate K^H K at many frequencies; at most about this many bytes of it at a time.
_CHUNK_BYTES = 2**18
# Kernels certified together hold about this many bytes of coefficients at most.
_GROUP_BYTES = 2**19


@dataclasses.dataclass(frozen=True)
class ConvNormCertificate:
    """bound >= ||conv_W|| for inputs of every size; gradient = d bound / d W (same shape as W, float64).

    frequency: where the bound is attained; slack: the proven factor between the bound and the largest
    sampled value, bound / sigma_max(K(frequency)); points: how many frequencies were sampled.
    """

    bound: float
    gradient: Tensor
    frequency: tuple[float, ...]
    slack: float
    points: int


def _offsets(kernel_shape: tuple[int, ...]) -> Tensor:
    """Tap offsets a of a 'same'-padded kernel, centred: a_j in [-(k_j - 1) / 2, (k_j - 1) / 2], (taps, d)."""
    axes = [torch.arange(k, dtype=torch.float64) - (k - 1) / 2 for k in kernel_shape]
    return torch.cartesian_prod(*axes).reshape(-1, len(kernel_shape))


@functools.lru_cache(maxsize=16)
def _layout(kernel_shape: tuple[int, ...], device: torch.device) -> dict[str, Tensor]:
    """Index tensors of one kernel shape: its tap offsets, the taps of conv^T conv (size 2k - 1) and, for
    each pair of taps (a, a'), the tap a' - a of conv^T conv that the pair contributes to."""
    taps = _offsets(kernel_shape)
    gram_shape = tuple(2 * k - 1 for k in kernel_shape)
    diff = (taps[None, :, :] - taps[:, None, :]).reshape(-1, len(kernel_shape)).long()
    diff += torch.tensor([k - 1 for k in kernel_shape])
    strides = torch.tensor([math.prod(gram_shape[j + 1:]) for j in range(len(gram_shape))])
    gram_taps = _offsets(gram_shape)
    # conv^T conv's taps come in pairs (b, -b) with V_-b = V_b^T: the centre, then one of each pair
    # (the second half in raster order: the first nonzero coordinate of b is positive).
    n = len(gram_taps)
    return {"taps": taps.to(device), "gram_taps": gram_taps.to(device),
            "pair_to_gram_tap": (diff * strides).sum(1).to(device),
            "centre": torch.tensor(n // 2, device=device), "half": torch.arange(n // 2 + 1, n, device=device)}


def _gram_taps(w: Tensor) -> Tensor:
    """Taps of conv^T conv, V_b = sum_a W_a^T W_(a+b) for b in [-(k-1), k-1]^d, (taps of V, C_in, C_in):
    H(w) = K(w)^H K(w) = sum_b V_b exp(-i w.b)."""
    c, layout = w.shape[1], _layout(tuple(w.shape[2:]), w.device)
    flat = w.flatten(2).transpose(1, 2).reshape(w.shape[0], -1)  # column a * C + i holds W[:, i, a]
    pairs = (flat.T @ flat).reshape(-1, c, flat.shape[1] // c, c).transpose(1, 2).reshape(-1, c * c)
    taps = pairs.new_zeros(len(layout["gram_taps"]), c * c).index_add_(0, layout["pair_to_gram_tap"], pairs)
    return taps.reshape(-1, c, c)


def _below(h: Tensor, level: Tensor) -> Tensor:
    """Certified test lambda_max(h_p) < level_p for Hermitian matrices: level_p I - h_p has a Cholesky
    factor. Its float64 backward error, ~C^2 eps ||h||, is far below the margins the callers leave."""
    a = h.neg()
    a.diagonal(dim1=-2, dim2=-1).add_(level[:, None])
    return torch.linalg.cholesky_ex(a).info == 0


def _final_omega(tolerance: float) -> float:
    """Largest Omega whose factor 1 / (1 - Omega^2 / 2) is within 1 + tolerance."""
    return math.sqrt(2 * (1 - 1 / (1 + tolerance)))


def _coarse_cells(kernel: Sequence[int], omega: float, device: torch.device) -> tuple[Tensor, Tensor, float, float]:
    """The first cells of the branch and bound: (centres, children's offsets per unit size, size, Omega per
    unit size), with Omega <= `omega`. They cover half the torus (last frequency in [0, pi]), enough as
    sigma_max(K(-w)) = sigma_max(K(w)).

    Cell shapes: Omega = sum_j p_j |d_j| over a cell is smallest for L1 balls, so in the first two
    frequencies the cells are diamonds |d_1| + |d_2| <= size (a checkerboard lattice; each splits into four
    half-size diamonds): twice the area of the squares with the same Omega. In 3D a cell is a diamond times
    an interval |d_3| <= size / 2 (splits into eight), twice the volume of the cubes with the same Omega.
    """
    p = [(k - 1) / 2 for k in kernel]
    d = len(p)
    per_size = max(p[0], p[1]) + (p[2] / 2 if d == 3 else 0.0)
    m = 2 * math.ceil(math.pi * per_size / omega)  # lattice spacing 2 pi / m = size; m even (periodic)
    index = torch.cartesian_prod(*[torch.arange(m)] * (d - 1), torch.arange(m // 2 + 1)).reshape(-1, d)
    centres = index[(index[:, 0] + index[:, 1]) % 2 == 0].double() * (2 * math.pi / m)
    diamond = [[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]]
    children = [x + [z] for x in diamond for z in (-0.25, 0.25)] if d == 3 else diamond
    return centres.to(device), torch.tensor(children, dtype=torch.float64, device=device), 2 * math.pi / m, per_size


class _GroupBound:
    """The branch and bound of `certified_conv_norms` for G nonzero kernels of one shape (G, C_out, C_in, *k)
    with C_out >= C_in, run together (one set of operations for all). Every kernel's result is the same
    as when it is certified alone: its cells are evaluated in pieces that depend on its own cells only,
    and it stops refining on its own count of cells."""

    def __init__(self, weights: Tensor):
        self.weights, self.count, self.c = weights, weights.shape[0], weights.shape[2]
        self.d, self.device = weights.dim() - 3, weights.device
        self.layout = layout = _layout(tuple(weights.shape[3:]), self.device)
        # H from the pairs (b, -b) of taps: V_b e^(-i w.b) + V_b^T e^(i w.b)
        # = cos(w.b) (V_b + V_b^T) - i sin(w.b) (V_b - V_b^T), half the products of all taps:
        # H(w) = sum_r cos_r(w) A_r + i sum_r sin_r(w) B_r, A_r symmetric, B_r antisymmetric (real).
        real_parts, imag_parts = [], []
        for w in weights:
            taps = _gram_taps(w)
            half = taps[layout["half"]]
            real_parts.append(torch.cat([taps[layout["centre"]][None], half + half.mT]))
            imag_parts.append(half.mT - half)
        self.real_part = torch.stack(real_parts).flatten(2)  # (G, 1 + taps of V // 2, C * C)
        self.imag_part = torch.stack(imag_parts).flatten(2)  # (G, taps of V // 2, C * C)
        self.chunk = max(1, _CHUNK_BYTES // (16 * self.c * self.c))  # cells of H per batch

    def chunks(self, cells: Tensor, owner: Tensor):
        """(rows, H(cells[rows])) over all cells (grouped by owner), H = K^H K (C_in x C_in) from the taps
        of conv^T conv: two real matrix products per piece of at most `chunk` cells of one kernel, pieces
        batched up to `chunk` cells."""
        pieces, start = [], 0
        for g, n in enumerate(torch.bincount(owner, minlength=self.count).tolist()):
            pieces += [(g, s, min(s + self.chunk, start + n)) for s in range(start, start + n, self.chunk)]
            start += n
        while pieces:
            batch = [pieces.pop(0)]
            while pieces and pieces[0][2] - batch[0][1] <= self.chunk:
                batch.append(pieces.pop(0))
            rows = slice(batch[0][1], batch[-1][2])
            theta = cells[rows] @ self.layout["gram_taps"][self.layout["half"]].T
            cos = torch.cat([theta.new_ones(len(theta), 1), torch.cos(theta)], 1)
            sin = torch.sin(theta)
            parts = []
            for g, s, e in batch:
                piece = slice(s - rows.start, e - rows.start)
                parts.append(torch.complex(cos[piece] @ self.real_part[g], sin[piece] @ self.imag_part[g]))
            yield rows, torch.cat(parts).reshape(-1, self.c, self.c)

    def gram(self, cells: Tensor, owner: Tensor) -> Tensor:
        return torch.cat([h for _, h in self.chunks(cells, owner)])

    def rayleigh(self, cells: Tensor, owner: Tensor, vectors: Tensor) -> Tensor:
        """x_g^H H(c) x_g for each cell, x_g its kernel's vector: a scalar trigonometric polynomial whose
        coefficients are computed once, so no H is formed. Lower bounds of lambda_max(H(c)).
        With x = a + i b: x^H A x = a^T A a + b^T A b (A symmetric), x^H (i B) x = -2 a^T B b (B antisymmetric)."""
        a, b = vectors.real, vectors.imag
        c = self.c
        real_part = self.real_part.reshape(self.count, -1, c, c)
        imag_part = self.imag_part.reshape(self.count, -1, c, c)
        cos_coef = torch.einsum("gi,grij,gj->gr", a, real_part, a) + torch.einsum("gi,grij,gj->gr", b, real_part, b)
        sin_coef = -2 * torch.einsum("gi,grij,gj->gr", a, imag_part, b)
        half_taps = self.layout["gram_taps"][self.layout["half"]]
        out, step = [], max(1, _CHUNK_BYTES // (8 * len(half_taps)))
        for start in range(0, len(cells), step):
            theta = cells[start:start + step] @ half_taps.T
            rows = owner[start:start + step]
            out.append(cos_coef[rows, 0] + (cos_coef[rows, 1:] * torch.cos(theta)).sum(1)
                       + (sin_coef[rows] * torch.sin(theta)).sum(1))
        return torch.cat(out)

    def per_kernel_max(self, values: Tensor, owner: Tensor) -> tuple[Tensor, Tensor]:
        """(max, index of a maximiser) of the values within each kernel's cells (-inf, len(values) if none)."""
        top = values.new_full((self.count,), -math.inf).scatter_reduce(0, owner, values, "amax")
        index = torch.arange(len(values), device=self.device)
        first = torch.full((self.count,), len(values), device=self.device).scatter_reduce(
            0, owner, torch.where(values >= top[owner], index, len(values)), "amin")
        return top, first

    def run(self, tolerance: float, max_points: int) -> list[ConvNormCertificate]:
        count, d, device = self.count, self.d, self.device
        kernels = torch.arange(count, device=device)
        best_lam = torch.zeros(count, dtype=torch.float64, device=device)
        best_freq = torch.zeros(count, d, dtype=torch.float64, device=device)
        points = torch.zeros(count, dtype=torch.long, device=device)
        slack = torch.ones(count, dtype=torch.float64, device=device)
        if all(k == 1 for k in self.weights.shape[3:]):  # 1x1 kernels: K(w) is constant, K(0) gives the norm
            best_lam = torch.linalg.eigvalsh(self.gram(best_freq, kernels))[:, -1]
            points += 1
        else:
            omega = _final_omega(tolerance)
            while omega * 2 <= 0.8:  # sizes halve from level to level; start at the last Omega <= 0.8
                omega *= 2
            coarse, children, size, omega_per_size = _coarse_cells(self.weights.shape[3:], omega, device)
            cells, owner = coarse.repeat(count, 1), kernels.repeat_interleave(len(coarse))
            best_vec, exact = None, True
            while len(cells):
                points += torch.bincount(owner, minlength=count)
                here = torch.bincount(owner, minlength=count) > 0
                if exact:  # coarse grid: exact eigenvalues everywhere (a good start matters for pruning)
                    score = torch.cat([torch.linalg.eigvalsh(h)[:, -1] for _, h in self.chunks(cells, owner)])
                else:  # Rayleigh quotients of each kernel's best eigenvector so far: lower bounds
                    score = self.rayleigh(cells, owner, best_vec)
                # The exact eigenpair where each kernel's score is largest.
                _, cand = self.per_kernel_max(score, owner)
                lam, vec = torch.linalg.eigh(self.gram(cells[cand[here]], kernels[here]))
                better = torch.zeros_like(here)
                better[here] = lam[:, -1] > best_lam[here]
                best_lam[better] = lam[better[here], -1]
                best_freq[better] = cells[cand[better]]
                if best_vec is None:
                    best_vec = vec[:, :, -1]
                else:
                    best_vec[better] = vec[better[here], :, -1]
                keep = 1.0 - 0.5 * (omega_per_size * size) ** 2
                level_slack = 1.0 / keep
                if level_slack <= 1.0 + tolerance:
                    finish, survivors = here, torch.zeros_like(owner, dtype=torch.bool)
                else:
                    # Drop the cells that cannot hold a maximiser; (1 - 1e-9) leaves room for rounding.
                    level = best_lam[owner] * keep**2 * (1 - 1e-9)
                    if exact:
                        survivors = score >= level
                    else:
                        survivors = torch.cat([~_below(h, level[rows]) for rows, h in self.chunks(cells, owner)])
                    # A kernel whose next level would exceed max_points stops here, with a larger slack.
                    finish = torch.bincount(owner[survivors], minlength=count) * len(children) > max_points
                    finish &= here
                if bool(finish.any()):
                    slack[finish] = level_slack
                    # Every centre certified below best (1 + 1e-6), or its eigenvalue computed (the
                    # coarse grid's are: best is their maximum).
                    mine = finish[owner] & (not exact)
                    sub_cells, sub_owner = cells[mine], owner[mine]
                    level = best_lam[sub_owner] * (1 + 1e-6)
                    for rows, h in self.chunks(sub_cells, sub_owner):
                        above = ~_below(h, level[rows])
                        if bool(above.any()):
                            lam = torch.linalg.eigvalsh(h[above])[:, -1]
                            top, first = self.per_kernel_max(lam, sub_owner[rows][above])
                            better = top > best_lam
                            best_lam[better] = top[better]
                            best_freq[better] = sub_cells[rows][above][first[better]]
                go_on = survivors & ~finish[owner]
                cells = (cells[go_on, None, :] + size * children).reshape(-1, d)
                owner = owner[go_on].repeat_interleave(len(children))
                size, exact = size / 2, False
        scale = slack * math.sqrt(1 + 1e-6)
        # Top singular pair (u, v) at each best frequency; sigma_max = Re v^H K u is linear in W.
        lam, vec = torch.linalg.eigh(self.gram(best_freq, kernels))
        u = vec[:, :, -1]  # (G, C_in)
        phase = torch.polar(torch.ones_like(best_freq[:, :1]), -(best_freq @ self.layout["taps"].T))  # (G, taps)
        k = torch.einsum("ga,goai->goi", phase, self.weights.flatten(3).transpose(2, 3).to(torch.complex128))
        v = (k @ u[:, :, None])[:, :, 0] / lam[:, -1:].clamp_min(1e-300).sqrt()
        gradient = (v.conj()[:, :, None, None] * u[:, None, :, None] * phase[:, None, None, :]).real
        gradient = scale[:, None, None, None] * gradient
        bound = scale * best_lam.clamp_min(0).sqrt()
        return [ConvNormCertificate(float(bound[g]), gradient[g].reshape(self.weights.shape[1:]),
                                    tuple(best_freq[g].tolist()), float(slack[g]), int(points[g]))
                for g in range(count)]


@torch.no_grad()
def certified_conv_norms(weights: Sequence[Tensor], tolerance: float = 0.01,
                         max_points: int = 16384) -> list[ConvNormCertificate]:
    """Upper bounds on the operator norms of zero-padded 'same' convolutions, each valid for inputs of
    every size and at most a factor 1 + `tolerance` above S = sup_w sigma_max(K(w)), the norm on large
    inputs. Kernels of one shape are certified together, faster; each result is the same as alone.

    Why it holds. A zero-padded convolution on n samples per axis is a compression (restriction of input
    and output) of the circular convolution on n + k // 2 samples, whose norm is the largest singular
    value of the kernel's transfer matrix K(w) = sum_a W_a exp(-i w.a) (C_out x C_in) over the DFT
    frequencies (Sedghi, Gupta and Long, ICLR 2019); so ||conv|| <= S. To bound the sup from finitely
    many frequencies: at a maximiser w*, take unit u, v with S = Re v^H K(w*) u. T(w) = Re v^H K(w) u is a
    trigonometric polynomial of degree p_j = (k_j - 1) / 2 in frequency j with |T| <= S, so Bernstein's
    inequality (per variable) gives |d_j d_l T| <= p_j p_l S, and as grad T(w*) = 0, Taylor gives
        sigma_max(K(w)) >= T(w) >= S (1 - Omega^2 / 2),   Omega = sum_j p_j |w_j - w*_j|,
    so S <= sigma_max(K(c)) / (1 - Omega^2 / 2) for the centre c of any cell holding w* (Omega its
    largest value over the cell; see `_coarse_cells` for the cells).

    Branch and bound over cells of frequencies (half the torus, as K(-w) = conj K(w) for real W): from a
    coarse lattice, drop the cells whose centre has sigma_max < best (1 - Omega^2 / 2) (they cannot hold
    w*, as the best value seen is <= S), split the others in half-size cells and repeat until the factor
    1 / (1 - Omega^2 / 2) is within the tolerance, or until a kernel's next level would exceed
    `max_points` frequencies (its bound then holds with the larger factor, reported as `slack`).
    `best` is exact (an eigenvalue of H = K^H K) where the Rayleigh quotient of the best eigenvector so
    far is largest; every upper bound (dropping a cell, the final maximum) is certified by a Cholesky
    factorisation of level I - H(c), or by an exact eigenvalue. All in float64, on the weights' device;
    cost and memory depend on the kernels only, never on the input size.

    The bound is f sigma_max(K(c_best)) (f the factor, times 1 + 1e-6 for the final Cholesky test), whose
    gradient (envelope theorem) is f Re(conj(v) u^T exp(-i c_best.a)), (u, v) the top singular pair there.
    """
    out: list[ConvNormCertificate | None] = [None] * len(weights)
    for i, w in enumerate(weights):
        if w.dim() not in (4, 5):
            raise ValueError(f"certified_conv_norms: weight {i} must be (C_out, C_in, *kernel) with 2 or 3 "
                             f"kernel dims, got shape {tuple(w.shape)}")
        if not torch.any(w):  # the zero convolution: norm 0
            out[i] = ConvNormCertificate(0.0, torch.zeros_like(w, dtype=torch.float64), (0.0,) * (w.dim() - 2), 1.0, 0)
    for batch in _batches(weights):
        # sigma_max(K) = sigma_max(K^T): orient every kernel so that the Gram matrix K^H K is the smaller one.
        flip = [weights[i].shape[0] < weights[i].shape[1] for i in batch]
        oriented = torch.stack([(weights[i].transpose(0, 1) if f else weights[i]).detach().to(torch.float64)
                                for i, f in zip(batch, flip)])
        for i, f, cert in zip(batch, flip, _GroupBound(oriented).run(tolerance, max_points)):
            out[i] = dataclasses.replace(cert, gradient=cert.gradient.transpose(0, 1)) if f else cert
    return out  # type: ignore[return-value]


def _batches(weights: Sequence[Tensor]) -> list[list[int]]:
    """Indices of the nonzero kernels in the batches certified together: one oriented shape (C_out >= C_in)
    and device each, and at most about `_GROUP_BYTES` of conv^T conv taps, so that the working memory
    does not grow with the number of kernels."""
    groups: dict[tuple, list[int]] = {}
    for i, w in enumerate(weights):
        if torch.any(w):
            shape = (max(w.shape[:2]), min(w.shape[:2]), *w.shape[2:])
            groups.setdefault((shape, w.device), []).append(i)
    batches = []
    for (shape, _), members in groups.items():
        size = max(1, _GROUP_BYTES // (8 * shape[1] ** 2 * math.prod(2 * k - 1 for k in shape[2:])))
        batches += [members[start:start + size] for start in range(0, len(members), size)]
    return batches


def certified_conv_norm(weight: Tensor, tolerance: float = 0.01, max_points: int = 16384) -> ConvNormCertificate:
    """`certified_conv_norms` of one kernel."""
    return certified_conv_norms([weight], tolerance, max_points)[0]


class NormBoundedConv(nn.Module):
    """A 'same'-padded convolution whose operator norm is <= `bound` for inputs of every size:
    W_eff = W / max(1, sigma / bound), sigma a certified upper bound on ||conv_W|| (`certified_conv_norms`).

    Why not power iteration on the convolution operator (i-ResNet, Behrmann et al. 2019), as before: its
    vector has the size of one input sample per convolution and each step costs two convolutions, so
    memory and time grew with the image size and the number of unrolls, and it estimates the norm from
    below (no guarantee). Why not the cheaper certified bound sqrt(k^d) ||[W_a]_a||_2 (the kernel's taps
    side by side): it is 1.3-1.9x the norm for random 3x3 kernels and would waste the Lipschitz budget;
    the frequency bound is within `tolerance` (1%) of the norm on large inputs (2% above it at 16 x 16).

    The certificate is a function of W alone, computed once per weight change (weights are compared by
    value, so in-place updates, `.data` writes, copies and device moves are all seen) and reused by every
    later forward (checkpoint recomputation, MEL inversion and re-run, a deep copy): repeated forwards
    with the same weights compute exactly the same function. sigma() has the bound's value and gradient.
    The module holds parameters only: nothing that depends on the input size. (It was `SpectralNormConv`:
    it is not torch's spectral_norm, which divides by a power-iteration estimate of the kernel matrix's norm.)
    """

    def __init__(self, in_channels: int, out_channels: int, conv_dims: int, kernel_size: int, bound: float,
                 tolerance: float = 0.01):
        super().__init__()
        if not 0 < tolerance < 1:
            raise ValueError(f"NormBoundedConv: tolerance must be in (0, 1), got {tolerance!r}")
        conv = conv_class(conv_dims)(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.weight, self.bias = conv.weight, conv.bias
        self.conv_dims, self.padding, self.bound = conv_dims, kernel_size // 2, float(bound)
        self.tolerance = float(tolerance)
        self._certificate: ConvNormCertificate | None = None
        self._certified_weight: Tensor | None = None  # a copy of the weights the certificate belongs to
        self._last_spatial: tuple[int, ...] | None = None  # for operator_norm() without a size

    def _certificate_is_current(self) -> bool:
        w, cached = self.weight.detach(), self._certified_weight
        return (self._certificate is not None and cached is not None and cached.shape == w.shape
                and cached.device == w.device and cached.dtype == w.dtype and torch.equal(cached, w))

    def _set_certificate(self, certificate: ConvNormCertificate) -> None:
        w = self.weight.detach()
        self._certificate = dataclasses.replace(certificate, gradient=certificate.gradient.to(w))  # W's dtype
        self._certified_weight = w.clone()

    def certificate(self) -> ConvNormCertificate:
        """The certificate of the current weights (recomputed only when they changed). Owners of several
        normalised convolutions bring them up to date together first (`refresh_certificates`: faster,
        same certificates); a conv used on its own certifies itself here."""
        if not self._certificate_is_current():
            refresh_certificates([self])
        return self._certificate  # type: ignore[return-value]

    def sigma(self) -> Tensor:
        """Certified upper bound on ||conv_W|| (any input size), with its gradient with respect to W."""
        bound = self.certificate().bound  # (also brings self._certificate up to date)
        # Value: the certified bound plus rounding room; derivative: d bound / d W (W - W.detach() is 0).
        return bound * (1 + _ROUNDING) + ((self.weight - self.weight.detach()) * self._certificate.gradient).sum()

    def effective_weight(self) -> Tensor:
        return self.weight / torch.clamp(self.sigma() / self.bound, min=1.0)

    def certified_norm(self) -> float:
        """Certified upper bound on the normalised convolution's operator norm (<= bound), any input size."""
        return min(float(self.sigma().detach()), self.bound)

    def forward(self, x: Tensor) -> Tensor:
        self._last_spatial = tuple(x.shape[2:])
        return _CONV[self.conv_dims](x, self.effective_weight(), self.bias, padding=self.padding)

    @torch.no_grad()
    def operator_norm(self, iters: int = 200, spatial: tuple[int, ...] | None = None) -> float:
        """The normalised convolution's norm at one input size (default: the last input's), by a fresh
        (seeded) power iteration with conv / conv-transpose: a check of the certificate, not used in training."""
        spatial = spatial or self._last_spatial
        if spatial is None:
            raise ValueError("operator_norm needs an input size: pass `spatial` or run one forward first")
        w = self.effective_weight()
        u = torch.randn((1, w.shape[1], *spatial), generator=torch.Generator().manual_seed(0)).to(w)
        for _ in range(iters):
            v = _CONV[self.conv_dims](u / u.norm().clamp_min(1e-30), w, None, padding=self.padding)
            u = _CONV_T[self.conv_dims](v, w, None, padding=self.padding)
        return float(_CONV[self.conv_dims](u / u.norm().clamp_min(1e-30), w, None, padding=self.padding).norm())


def refresh_certificates(convs: nn.Module | Iterable[nn.Module]) -> None:
    """Bring the certificates of several normalised convolutions up to date at once: every out-of-date
    NormBoundedConv in `convs` (modules, searched recursively) is certified in one call, kernels of one
    shape sharing the branch and bound's operations (each certificate is the same as alone, only faster).
    The scope is explicit -- the caller's own modules -- so one network never pays for another's updates."""
    modules = [convs] if isinstance(convs, nn.Module) else list(convs)
    found = {id(m): m for module in modules for m in module.modules() if isinstance(m, NormBoundedConv)}
    stale = [conv for conv in found.values() if not conv._certificate_is_current()]
    by_tolerance: dict[float, list[NormBoundedConv]] = {}
    for conv in stale:
        by_tolerance.setdefault(conv.tolerance, []).append(conv)
    # Never inference tensors (e.g. first computed in a validation loop): training reuses them in autograd.
    with torch.inference_mode(False):
        for tolerance, group in by_tolerance.items():
            # certified_conv_norms batches the kernels itself (bounded working memory per batch).
            for conv, cert in zip(group, certified_conv_norms([conv.weight for conv in group], tolerance)):
                conv._set_certificate(cert)
