"""The convex programs behind two-layer ReLU denoisers (Sahiner et al., ICLR 2021; Mishkin, Sahiner and
Pilanci, ICML 2022), on a patch matrix X (n, d) and targets Y (n, c).

Sign patterns D_i = diag(1[X g_i >= 0]) come from P random Gaussian gates g_i (duplicates and all-zero
patterns dropped). With the loss scaled by 1 / (2n) (pyscnn's convention, so lam does not grow with the
number of patches):

gated ReLU   min_U  1/(2n) ||sum_i D_i X U_i - Y||^2 + lam sum_groups ||U_g||
ReLU         min_{V,W}  1/(2n) ||sum_i D_i X (V_i - W_i) - Y||^2 + lam sum_groups (||V_g|| + ||W_g||)
             s.t. (2 D_i - I) X V_i[:, c] >= 0 and (2 D_i - I) X W_i[:, c] >= 0 for every output channel c

U_i, V_i, W_i are (d, c): a patch -> the c output channels. Weights are stacked as (P, d, c).
Groups ("group_by"):
  "pattern"  one group per pattern, the whole (d, c) block: path sparsity shared by all output channels;
  "channel"  one group per pattern and output channel, the (d,) column.
With "channel", the ReLU program is exactly a two-layer ReLU network with weight decay whose hidden units
each feed one output channel: min 1/(2n) ||sum_j (X u_j)_+ a_j - y_c||^2 + lam/2 sum_j (||u_j||^2 + a_j^2)
over all such networks equals the ReLU program over all patterns (one neuron per nonzero column,
u = v / sqrt||v||, a = +-sqrt||v||), and over sampled patterns it is the optimum among networks whose units'
patterns were sampled. With "pattern" the mapped network predicts the same but its weight decay is the
sum of column norms, >= the Frobenius group norm.

Two ways to apply the linear maps, chosen per problem (`gram`):
  Gram matrix   the gated loss is a quadratic in the P d weights per channel; its Gram matrix (P d x P d,
                built once in O(n (P d)^2)) makes an iteration independent of n. Used when it fits
                `gram_budget` bytes (default 128 MiB, P d <= 4096 in float64; beyond that its build also
                costs more than hundreds of matrix-free iterations).
  matrix-free   products with X, D_i and their adjoints as patch products over blocks of `block` rows
                (never an n x P d matrix): the prediction sum_i D_i X U_i row by row as x_j^T (D[j] U), the
                adjoint as (x_j r_j^T)^T D, one (block x P) by (P x d c) product each; memory O(block d c)
                besides X and D, and for the ReLU program O(block P c) and the multipliers (n, 2, P, c).
Both run on X's device. X may be float32 (half the memory, twice the speed of the products): the weights,
targets, losses, Gram matrix and the sums over row blocks are then kept in float64 ("accumulation dtype").
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

from .cones import relu_threshold

GROUPINGS = ("pattern", "channel")
GRAM_BUDGET = 128 * 2**20  # bytes
BLOCK = 8192               # rows per block of the matrix-free products


def check_lam(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"convex model: lam (the group-l1 / weight-decay strength) must be a finite number "
                         f">= 0, got {lam!r}")
    return float(lam)


def sample_gates(X: Tensor, num_gates: int, seed: int = 0, paired: bool = False) -> Tensor:
    """(d, P') gates g_i ~ N(0, I) whose patterns 1[X g_i >= 0] are distinct and not all zero (P' <= P).
    paired: P // 2 random gates followed by their negatives; D_g + D_-g = I (up to patches with X g = 0), so
    the gated model holds every linear filter (a pair with equal weights), not only piecewise ones."""
    least = 2 if paired else 1
    if isinstance(num_gates, bool) or not isinstance(num_gates, int) or num_gates < least:
        raise ValueError(f"convex model: num_gates (P, the number of random gate filters) must be an integer "
                         f">= {least}{' with paired gates' if paired else ''}, got {num_gates!r}")
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(X.shape[1], num_gates // 2 if paired else num_gates, generator=g, dtype=torch.float64).to(X)
    return unique_pattern_gates(X, torch.cat([gates, -gates], 1) if paired else gates)


def unique_pattern_gates(X: Tensor, gates: Tensor) -> Tensor:
    """The gates (columns) with distinct, not all-zero patterns, in their first-seen order."""
    patterns = (X @ gates >= 0).T  # (P, n)
    keep = patterns.any(1)
    _, inverse = torch.unique(patterns, dim=0, return_inverse=True)
    dev = patterns.device
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long, device=dev)
    first.scatter_reduce_(0, inverse, torch.arange(len(inverse), device=dev), reduce="amin")
    unique = torch.zeros(len(inverse), dtype=torch.bool, device=dev)
    unique[first] = True
    kept = gates[:, keep & unique]
    if kept.shape[1] == 0:
        raise ValueError("convex model: every gate gives the all-zero pattern (are all patches zero?)")
    return kept


class ConvexProblem:
    """Data, patterns and the linear maps of both programs, on X's device.

    X keeps its dtype (float32 or float64); weights, targets and every reduction use `self.dtype`
    (float64, or X's dtype when that is wider). gram: True / False forces the Gram-matrix / matrix-free
    form of the gated loss; None chooses by `gram_budget` (bytes).
    """

    def __init__(self, X: Tensor, Y: Tensor, gates: Tensor, lam: float, group_by: str = "pattern",
                 gram: bool | None = None, gram_budget: int = GRAM_BUDGET, block: int = BLOCK):
        if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"convex model: need X (n, d) and Y (n, c) with the same n, got {tuple(X.shape)} "
                             f"and {tuple(Y.shape)}")
        if gates.dim() != 2 or gates.shape[0] != X.shape[1] or gates.shape[1] < 1:
            raise ValueError(f"convex model: gates must be (d={X.shape[1]}, P >= 1), got {tuple(gates.shape)}")
        if group_by not in GROUPINGS:
            raise ValueError(f"convex model: group_by must be one of {GROUPINGS}, got {group_by!r}")
        if X.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"convex model: patches must be float32 or float64, got {X.dtype}")
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise ValueError("convex model: non-finite values in the patches or targets")
        for name, v in (("gram_budget", gram_budget), ("block", block)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "gram_budget" else 1):
                raise ValueError(f"convex model: {name} must be an integer >= {0 if name == 'gram_budget' else 1}, "
                                 f"got {v!r}")
        self.dtype = torch.float64
        self.X, self.Y = X, Y.to(device=X.device, dtype=self.dtype)
        self.gates = gates.to(X)
        self.lam, self.group_by = check_lam(lam), group_by
        self.D = (X @ self.gates >= 0).to(X.dtype)  # (n, P), in X's dtype (0/1 are exact)
        self.n, self.block = X.shape[0], block
        P, d = self.gates.shape[1], X.shape[1]
        self.gram_bytes = (P * d) ** 2 * torch.finfo(self.dtype).bits // 8
        self.gram = (self.gram_bytes <= gram_budget) if gram is None else bool(gram)
        self._H: Tensor | None = None
        self._relu_threshold: tuple[float, tuple[float, float]] | None = None

    @property
    def S(self) -> Tensor:
        """(2 D_i - I) as signs, (n, P)."""
        return 2 * self.D - 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """(P, d, c): the shape of U, V and W."""
        return self.gates.shape[1], self.X.shape[1], self.Y.shape[1]

    def zeros(self) -> Tensor:
        return torch.zeros(self.shape, dtype=self.dtype, device=self.X.device)

    # ------------------------------------------------------------------ patch products, by row blocks
    def blocks(self) -> Iterator[slice]:
        for start in range(0, self.n, self.block):
            yield slice(start, min(start + self.block, self.n))

    def lift(self, U: Tensor, rows: slice = slice(None)) -> Tensor:
        """X U_i for every pattern on the given rows: U (..., P, d, c) -> (m, ..., P, c) in X's dtype."""
        Xr = self.X[rows]
        lead = U.shape[:-2]
        out = Xr @ U.to(Xr.dtype).movedim(-2, 0).reshape(U.shape[-2], -1)   # (m, prod(lead) c)
        return out.reshape(Xr.shape[0], *lead, U.shape[-1])

    def lower(self, B: Tensor, rows: slice = slice(None)) -> Tensor:
        """Adjoint of :meth:`lift`: X^T B on the given rows, (m, ..., P, c) -> (..., P, d, c) in self.dtype."""
        Xr = self.X[rows]
        out = Xr.T @ B.to(Xr.dtype).reshape(B.shape[0], -1)                  # (d, prod(lead) c)
        return out.to(self.dtype).reshape(Xr.shape[1], *B.shape[1:]).movedim(0, -2)

    # ------------------------------------------------------------------ linear maps
    def features(self, U: Tensor) -> Tensor:
        """X U_i for every pattern: (n, P, c) (all rows at once: for small problems and tests)."""
        return self.lift(U).to(self.dtype)

    def predict(self, U: Tensor) -> Tensor:
        """sum_i D_i X U_i: (n, c) in self.dtype."""
        return torch.cat([self._predict_rows(U, r) for r in self.blocks()])

    def _predict_rows(self, U: Tensor, rows: slice) -> Tensor:
        # sum_i D[j, i] x_j^T U_i = x_j^T (sum_i D[j, i] U_i): one (m, P) x (P, d c) product, no (m, P, c) array
        Xr = self.X[rows]
        P, d, c = U.shape
        mixed = (self.D[rows] @ U.to(Xr.dtype).reshape(P, d * c)).reshape(-1, d, c)
        return (mixed * Xr.unsqueeze(-1)).sum(1).to(self.dtype)

    def _adjoint_rows(self, R: Tensor, rows: slice) -> Tensor:
        # X^T D_i R = sum_j D[j, i] x_j r_j^T: one (d c, m) x (m, P) product
        Xr = self.X[rows]
        outer = (Xr.unsqueeze(-1) * R.to(Xr.dtype).unsqueeze(1)).reshape(Xr.shape[0], -1)   # (m, d c)
        return (outer.T @ self.D[rows]).to(self.dtype).reshape(Xr.shape[1], R.shape[1], -1).permute(2, 0, 1)

    def predict_adjoint(self, R: Tensor) -> Tensor:
        """Adjoint of :meth:`predict`: (n, c) -> (P, d, c), X^T D_i R for every i."""
        return sum(self._adjoint_rows(R[r], r) for r in self.blocks())

    def cone(self, V: Tensor) -> Tensor:
        """(2 D_i - I) X V_i: (n, P, c); the ReLU program needs it >= 0."""
        return self.S.unsqueeze(-1).to(self.dtype) * self.features(V)

    def cone_adjoint(self, L: Tensor) -> Tensor:
        return sum(self.lower(self.S[r].unsqueeze(-1) * L[r].to(self.X.dtype), r) for r in self.blocks())

    def cone_floor(self, V: Tensor) -> Tensor:
        """(P, c): the most negative value of (2 D_i - I) X V_i[:, c] over the rows (0 if none is negative)."""
        out = torch.zeros(self.shape[::2], dtype=self.dtype, device=self.X.device)
        for r in self.blocks():
            low = (self.S[r].unsqueeze(-1) * self.lift(V, r)).amin(0).to(self.dtype)
            out = torch.minimum(out, low)
        return out

    # ------------------------------------------------------------------ objectives
    def _quadratic(self) -> tuple[Tensor, Tensor, Tensor]:
        """(H, b, y^T y / 2n) with loss(U) = u^T H u / 2 - b^T u + y^T y / 2n, u = U as (P d, c)."""
        if self._H is None:
            P, d, c = self.shape
            H = torch.zeros(P * d, P * d, dtype=self.dtype, device=self.X.device)
            b = torch.zeros(P * d, c, dtype=self.dtype, device=self.X.device)
            for r in self.blocks():
                A = (self.D[r].unsqueeze(-1) * self.X[r].unsqueeze(1)).reshape(-1, P * d).to(self.dtype)
                H += A.T @ A
                b += A.T @ self.Y[r]
            self._H, self._b = H / self.n, b / self.n
            self._yy = (self.Y * self.Y).sum() / (2 * self.n)
        return self._H, self._b, self._yy

    def loss(self, U: Tensor) -> Tensor:
        if self.gram and U.shape == self.shape:
            return self.loss_and_grad(U)[0]
        total = U.new_zeros(())
        for r in self.blocks():
            res = self._predict_rows(U, r) - self.Y[r]
            total = total + (res * res).sum()
        return total / (2 * self.n)

    def loss_and_grad(self, U: Tensor) -> tuple[Tensor, Tensor]:
        if self.gram and U.shape == self.shape:
            H, b, yy = self._quadratic()
            u = U.reshape(-1, U.shape[-1])
            g = H @ u - b
            # (g - b) . u / 2 = u^T H u / 2 - b^T u
            return ((g - b) * u).sum() / 2 + yy, g.reshape(U.shape)
        total, grad = U.new_zeros(()), torch.zeros_like(U)
        for r in self.blocks():
            res = self._predict_rows(U, r) - self.Y[r]
            total = total + (res * res).sum()
            grad += self._adjoint_rows(res, r)
        return total / (2 * self.n), grad / self.n

    def group_norms(self, U: Tensor) -> Tensor:
        """(P,) for group_by "pattern", (P, c) for "channel" (a leading stack dim is kept)."""
        return U.norm(dim=(-2, -1)) if self.group_by == "pattern" else U.norm(dim=-2)

    def penalty(self, U: Tensor) -> Tensor:
        return self.lam * self.group_norms(U).sum()

    def gated_objective(self, U: Tensor) -> float:
        return float(self.loss(U) + self.penalty(U))

    def relu_objective(self, V: Tensor, W: Tensor) -> float:
        return float(self.loss(V - W) + self.penalty(V) + self.penalty(W))

    def constraint_violation(self, V: Tensor, W: Tensor) -> float:
        """max over all cone constraints of how far (2 D_i - I) X V_i (or W_i) falls below 0."""
        return float(-torch.minimum(self.cone_floor(V), self.cone_floor(W)).min()) + 0.0  # no "-0.0"

    def lam_max(self) -> float:
        """The smallest lam at which U = 0 solves the gated program: max over groups of ||X^T D_i Y|| / n
        (the optimality condition at 0: every group's loss gradient inside the lam-ball). The ReLU
        program's optimum is then 0 as well (its objective is >= the gated one at U = V - W and equal at
        0), so lam >= lam_max needs no iterations for either; its own threshold (`relu_lam_max`) is lower."""
        return float(self.group_norms(self.predict_adjoint(self.Y) / self.n).max())

    def relu_lam_max_bracket(self, rtol: float = 1e-6) -> tuple[float, float]:
        """Certified (lower, upper) bounds on the ReLU program's own zero threshold (`cones.relu_threshold`:
        one cone projection per gate and direction; no closed form): lam >= upper certifies the optimum 0,
        lam < lower certifies a nonzero one. Computed once per problem (it does not depend on lam)."""
        if self._relu_threshold is None or self._relu_threshold[0] > rtol:
            self._relu_threshold = (rtol, relu_threshold(self, rtol))
        return self._relu_threshold[1]

    def relu_lam_max(self) -> float:
        """The smallest lam certified to give the ReLU program the optimum 0 (upper end of the bracket)."""
        return self.relu_lam_max_bracket()[1]

    # ------------------------------------------------------------------ the group-l1 prox
    def soft_threshold(self, U: Tensor, t: float) -> Tensor:
        """prox of t * lam * sum ||U_g||: scale each group by (1 - t lam / ||U_g||)_+."""
        norms = self.group_norms(U)
        scale = (1 - t * self.lam / norms.clamp_min(1e-300)).clamp_min(0)
        return U * self._expand(scale)

    def _expand(self, a: Tensor) -> Tensor:
        return a[..., None, None] if self.group_by == "pattern" else a.unsqueeze(-2)

    def min_norm_subgradient(self, U: Tensor, grad: Tensor) -> Tensor:
        """Norm of the smallest element of grad + lam d(sum ||U_g||): 0 exactly at an optimum."""
        norms = self.group_norms(U)
        gnorms = self.group_norms(grad)
        active = norms > 0
        at_nonzero = grad + self.lam * U / self._expand(norms.clamp_min(1e-300))
        # at a zero group the subdifferential is the lam-ball: what is left of grad outside it
        at_zero = grad * self._expand((1 - self.lam / gnorms.clamp_min(1e-300)).clamp_min(0))
        return torch.where(self._expand(active), at_nonzero, at_zero).norm()

    # ------------------------------------------------------------------ duality
    def dual_value(self, residual_sq: float, residual_dot_y: float, dual_norm_max: float) -> float:
        """A lower bound on the optimum from the residual r = prediction - Y of any point.

        Fenchel dual of both programs (loss 1/(2n) ||p - Y||^2, conjugate n/2 ||z||^2 + <z, Y>):
        max_z -n/2 ||z||^2 - <z, Y> subject to, for every group, ||X^T (D_i z - S_i gamma_i)|| <= lam
        (and the same with -z, xi for W) for some multipliers gamma, xi >= 0 (gated: gamma = 0). With
        z = s r / n, the scale s in [0, lam / dual_norm_max] (the largest feasible one, where
        dual_norm_max is that group norm at z = r / n) that maximises the concave quadratic is used.
        """
        a, b = residual_sq / (2 * self.n), residual_dot_y / self.n   # dual(s) = -a s^2 - b s
        s_max = math.inf if dual_norm_max <= 0 else self.lam / dual_norm_max
        s = min(max(-b / (2 * a), 0.0), s_max) if a > 0 else 0.0
        return -a * s * s - b * s
