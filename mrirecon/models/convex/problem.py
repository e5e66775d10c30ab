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
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

GROUPINGS = ("pattern", "channel")


def check_lam(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"convex model: lam (the group-l1 / weight-decay strength) must be a finite number "
                         f">= 0, got {lam!r}")
    return float(lam)


def sample_gates(X: Tensor, num_gates: int, seed: int = 0) -> Tensor:
    """(d, P') gates g_i ~ N(0, I) whose patterns 1[X g_i >= 0] are distinct and not all zero (P' <= P)."""
    if isinstance(num_gates, bool) or not isinstance(num_gates, int) or num_gates < 1:
        raise ValueError(f"convex model: num_gates (P, the number of random gate filters) must be an integer "
                         f">= 1, got {num_gates!r}")
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(X.shape[1], num_gates, generator=g, dtype=torch.float64).to(X)
    return unique_pattern_gates(X, gates)


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
    """Data, patterns and the linear maps of both programs. Everything is computed in X's dtype/device."""

    def __init__(self, X: Tensor, Y: Tensor, gates: Tensor, lam: float, group_by: str = "pattern",
                 gram: bool | None = None):
        if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"convex model: need X (n, d) and Y (n, c) with the same n, got {tuple(X.shape)} "
                             f"and {tuple(Y.shape)}")
        if gates.dim() != 2 or gates.shape[0] != X.shape[1] or gates.shape[1] < 1:
            raise ValueError(f"convex model: gates must be (d={X.shape[1]}, P >= 1), got {tuple(gates.shape)}")
        if group_by not in GROUPINGS:
            raise ValueError(f"convex model: group_by must be one of {GROUPINGS}, got {group_by!r}")
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise ValueError("convex model: non-finite values in the patches or targets")
        self.X, self.Y, self.gates = X, Y.to(X), gates.to(X)
        self.lam, self.group_by = check_lam(lam), group_by
        self.D = (X @ self.gates >= 0).to(X.dtype)  # (n, P)
        self.S = 2 * self.D - 1                      # (2 D_i - I) as signs
        self.n = X.shape[0]
        # The gated loss is a quadratic in the P d weights per channel: with its Gram matrix (P d x P d,
        # built once in O(n (P d)^2)) an iteration no longer touches the n patches. Auto: when P d <= 4096.
        P, d = self.gates.shape[1], X.shape[1]
        self.gram = (P * d <= 4096) if gram is None else bool(gram)
        self._H: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(P, d, c): the shape of U, V and W."""
        return self.gates.shape[1], self.X.shape[1], self.Y.shape[1]

    def zeros(self) -> Tensor:
        return self.X.new_zeros(self.shape)

    # ------------------------------------------------------------------ linear maps
    def features(self, U: Tensor) -> Tensor:
        """X U_i for every pattern: (n, P, c)."""
        return torch.einsum("nd,pdc->npc", self.X, U)

    def predict(self, U: Tensor) -> Tensor:
        """sum_i D_i X U_i: (n, c)."""
        return (self.D.unsqueeze(-1) * self.features(U)).sum(1)

    def predict_adjoint(self, R: Tensor) -> Tensor:
        """Adjoint of :meth:`predict`: (n, c) -> (P, d, c), X^T D_i R for every i."""
        return torch.einsum("nd,npc->pdc", self.X, self.D.unsqueeze(-1) * R.unsqueeze(1))

    def cone(self, V: Tensor) -> Tensor:
        """(2 D_i - I) X V_i: (n, P, c); the ReLU program needs it >= 0."""
        return self.S.unsqueeze(-1) * self.features(V)

    def cone_adjoint(self, L: Tensor) -> Tensor:
        return torch.einsum("nd,npc->pdc", self.X, self.S.unsqueeze(-1) * L)

    # ------------------------------------------------------------------ objectives
    def _quadratic(self) -> tuple[Tensor, Tensor, Tensor]:
        """(H, b, y^T y / 2n) with loss(U) = u^T H u / 2 - b^T u + y^T y / 2n, u = U as (P d, c)."""
        if self._H is None:
            A = (self.D.unsqueeze(-1) * self.X.unsqueeze(1)).reshape(self.n, -1)  # [D_1 X, ..., D_P X]
            self._H, self._b = A.T @ A / self.n, A.T @ self.Y / self.n
            self._yy = (self.Y * self.Y).sum() / (2 * self.n)
        return self._H, self._b, self._yy

    def loss(self, U: Tensor) -> Tensor:
        if self.gram and U.shape == self.shape:
            return self.loss_and_grad(U)[0]
        r = self.predict(U) - self.Y
        return (r * r).sum() / (2 * self.n)

    def loss_and_grad(self, U: Tensor) -> tuple[Tensor, Tensor]:
        if self.gram and U.shape == self.shape:
            H, b, yy = self._quadratic()
            u = U.reshape(-1, U.shape[-1])
            g = H @ u - b
            # (g - b) . u / 2 = u^T H u / 2 - b^T u
            return ((g - b) * u).sum() / 2 + yy, g.reshape(U.shape)
        r = self.predict(U) - self.Y
        return (r * r).sum() / (2 * self.n), self.predict_adjoint(r) / self.n

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
        return float(torch.maximum(-self.cone(V), -self.cone(W)).clamp_min(0).max()) + 0.0  # no "-0.0"

    # ------------------------------------------------------------------ the group-l1 prox
    def soft_threshold(self, U: Tensor, t: float) -> Tensor:
        """prox of t * lam * sum ||U_g||: scale each group by (1 - t lam / ||U_g||)_+."""
        norms = self.group_norms(U)
        scale = (1 - t * self.lam / norms.clamp_min(1e-300)).clamp_min(0)
        return U * (scale[..., None, None] if self.group_by == "pattern" else scale.unsqueeze(-2))

    def min_norm_subgradient(self, U: Tensor, grad: Tensor) -> Tensor:
        """Norm of the smallest element of grad + lam d(sum ||U_g||): 0 exactly at an optimum."""
        norms = self.group_norms(U)
        gnorms = self.group_norms(grad)
        expand = (lambda a: a[..., None, None]) if self.group_by == "pattern" else (lambda a: a.unsqueeze(-2))
        active = norms > 0
        at_nonzero = grad + self.lam * U / expand(norms.clamp_min(1e-300))
        # at a zero group the subdifferential is the lam-ball: what is left of grad outside it
        at_zero = grad * expand((1 - self.lam / gnorms.clamp_min(1e-300)).clamp_min(0))
        return torch.where(expand(active), at_nonzero, at_zero).norm()
