"""The exact ReLU program's cones K_i = {u : (2 D_i - I) X u >= 0}: projections onto them, the norms they
induce, and the program's own zero threshold.

Projection. proj_K(z) = argmin ||u - z|| s.t. A u >= 0 (A = (2 D_i - I) X, n x d) has the dual
min_{mu >= 0} ||z + A^T mu||, a nonnegative least-squares problem (Moreau: z = proj_K(z) + proj_{K°}(z),
K° = {-A^T mu : mu >= 0}), whose solution needs at most d positive mu (the active constraints). It is solved by
constraint generation, for many (gate, column) pairs at once: the previous call's active rows are tried
first (one batched Cholesky solve: exact when the active set did not change); otherwise, or when a row
outside the working set is violated, the most violated rows join it and a small NNLS (scipy's Lawson-Hanson)
is solved on it, until no row is violated by more than `tol` (one pass over the patches per round, or
over a column's screened rows only while it stays within a safe distance of its last projection: see
`ConeProjector._check`).

Certified bounds on ||proj_K(z)|| = max_{u in K, ||u|| <= 1} <z, u>, whatever the accuracy reached:
  upper  ||z + A^T mu|| for any mu >= 0 (the working set's NNLS solution, zeros elsewhere);
  lower  <z, u'> / ||u'|| for any u' in K (the projection shifted into K along the gate g_i, which lies in
         its own cone: (2 D_i - I) X g_i = |X g_i|).
The upper bound needs no pass over the patches when mu is solved on rows remembered from earlier
projections (`ConeProjector.norm_upper`): the projected ReLU solver bounds the cone norms of its gradient
with its prox's own active rows, exact at the optimum.

Zero threshold. With the 1/(2n) loss, 0 solves the ReLU program iff no feasible direction descends:
max_{u in K_i, ||u|| <= 1} <h, u> <= lam for h = X^T D_i Y / n (direction V_i) and h = -X^T D_i Y / n
(direction W_i), per group (group_by "channel": per column; "pattern": the (d, c) block, cone K_i^c, so the
group's value is the 2-norm of its columns' values). The threshold is the largest such value: it lies
below the gated program's closed-form lam_max (the same with K_i = R^d) and has no closed form.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor

ConvexProblem = Any   # problem.ConvexProblem: problem.py imports this module, so no import back


def gate_shift_columns(problem: ConvexProblem, u: Tensor, gate: Tensor) -> Tensor:
    """(B,): the smallest t >= 0 with (2 D_i - I) X (u_b + t g_i) >= 0 on every row, i = gate[b], u (B, d)."""
    t = torch.zeros(u.shape[0], dtype=problem.dtype, device=problem.X.device)
    G = problem.gates[:, gate]                                                     # (d, B)
    for r in problem.blocks():
        S = problem.S[r][:, gate]
        need = (-(S * (problem.X[r] @ u.T.to(problem.X.dtype)))).clamp_min(0).to(problem.dtype)   # (m, B)
        Xg = (problem.X[r] @ G).abs().to(problem.dtype)
        on_plane = Xg == 0
        if bool((need > 0).logical_and(on_plane).any()):
            raise ValueError("convex model: a patch lies on a gate's hyperplane (X g_i = 0) but outside the cone; "
                             "resample the gates (another seed)")
        t = torch.maximum(t, torch.where(on_plane, torch.zeros_like(need), need / Xg.clamp_min(1e-300)).amax(0))
    # a hair inside, so rounding does not leave a 1e-17 violation (float32 patches: their rounding level)
    return t * (1 + (1e-9 if problem.X.dtype == torch.float64 else 1e-5))


def _compact(rows: Tensor) -> Tensor:
    """Row-index lists (B, k) with -1 holes -> the valid indices first, trailing all -1 columns dropped."""
    k = int((rows >= 0).sum(1).max()) if rows.numel() else 0
    return rows.sort(dim=1, descending=True).values[:, :k]


def columns(Z: Tensor) -> Tensor:
    """(..., P, d, c) -> (B, d), column b = (lead, i, ch) in C order."""
    return Z.movedim(-1, -2).reshape(-1, Z.shape[-2])


def uncolumns(u: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`columns`."""
    *lead, d, c = shape
    return u.reshape(*lead, c, d).movedim(-1, -2)


def column_gates(shape: torch.Size) -> Tensor:
    """(B,): the gate (pattern) index of every column of a (..., P, d, c) stack."""
    *lead, P, d, c = shape
    return torch.arange(P).repeat_interleave(c).repeat(int(np.prod(lead)) if lead else 1)


class ConeProjector:
    """Projections of the columns of (..., P, d, c) stacks onto their cones K_i, remembering each column's
    active rows between calls (warm starts: an iterative solver's consecutive points share faces).

    tol: a projection is accepted when no row violates (2 D_i - I) X u >= 0 by more than tol (absolute; a
    tensor gives one per column). add: rows joining a column's working set per round. max_rounds, or the
    time.perf_counter() `deadline`: then the best point so far is returned, its violation reported (never
    hidden). screen: rows kept per column for the screened checks (`_check`); rebuild: their state is rebuilt
    after a full check only when the column's last move was below rebuild x its screening radius tau (math.inf:
    always; a rebuild is a top-`screen` selection over every row, wasted on an iterate that still moves far)."""

    def __init__(self, problem: ConvexProblem, tol: float | Tensor = 1e-8, add: int = 32, max_rounds: int = 200,
                 screen: int = 2048, rebuild: float = 2.0):
        self.p, self.tol, self.add, self.max_rounds = problem, tol, add, max_rounds
        self.S = problem.S                                    # (n, P) signs in X's dtype, built once
        self.ST = problem.S.T.to(torch.int8).contiguous()     # (P, n): rows of signs per gate, for the checks
        xnorm = problem.X.norm(dim=1)                          # margins normalised for the screening; a zero
        self.xinv = torch.where(xnorm > 0, 1 / xnorm, 0)       # patch's constraint 0 >= 0 always holds: q = inf
        self.qpad = torch.where(xnorm > 0, 0, math.inf).to(problem.X.dtype)
        self.screen, self.rebuild = screen, rebuild
        self.rebuilt = 0                                      # columns whose screening state was rebuilt
        self.ref: Tensor | None = None                        # screening state per column (see _check)
        self.ncols = 0
        self.full_checks = self.screened_checks = 0
        self.X64 = problem.X.to(problem.dtype)                # rows of A gathered in float64 for the small solves
        self.rows: Tensor | None = None                       # (B, k) each column's active rows, -1 = none
        self.last_violation = 0.0
        self.last_rounds = 0
        self.deadline = math.inf

    def _A(self, rows: Tensor, gate: Tensor) -> Tensor:
        """(B, k, d): the rows (2 D_i - I) x_j of the columns' cones, zero where rows == -1."""
        r = rows.clamp_min(0)
        sign = self.S[r, gate[:, None]].to(self.p.dtype) * (rows >= 0)
        return self.X64[r] * sign.unsqueeze(-1)

    def _active_set(self, z: Tensor, gate: Tensor, rows: Tensor, act: Tensor, eps: Tensor,
                    iterations: int = 16, return_mu: bool = False):
        """Batched active-set iterations for the NNLS on each column's working rows: solve u = z + A_act^T mu,
        A_act u = 0 (one Cholesky per column), then keep the rows with mu > 0 and add the working row with the
        most negative A u (< -eps), until the set stops changing. Returns (u, active mask, done mask);
        a column not done (a singular system, or no fixed point within `iterations`) needs the NNLS."""
        M_all = self._A(rows, gate)                                         # (B, k, d)
        valid = rows >= 0
        act = act & valid
        Gram = M_all @ M_all.transpose(1, 2)                                # (B, k, k), once
        Mz = (M_all @ z.unsqueeze(-1)).squeeze(-1)                          # A z on the working rows
        done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        mu = torch.zeros_like(Mz)
        todo = torch.arange(z.shape[0], device=z.device)   # a settled column's next iteration repeats itself:
        for _ in range(iterations):                         # only the unsettled ones are iterated
            G, b, at, ok = Gram[todo], Mz[todo], act[todo], valid[todo]
            a = at.to(Gram.dtype)
            Gm = G * (a.unsqueeze(-1) * a.unsqueeze(-2)) + torch.diag_embed(1 - a)
            L, info = torch.linalg.cholesky_ex(Gm)
            m = torch.cholesky_solve(-(b * a).unsqueeze(-1), L).squeeze(-1) * a
            regular = (info == 0) & torch.isfinite(m).all(1)
            mt = torch.where(regular[:, None], m, mu[todo])
            mu[todo] = mt
            c = b + (G @ mt.unsqueeze(-1)).squeeze(-1)                      # A u on the working rows
            # drop the rows with negative multipliers; add only the most violated row (a violated row is
            # outside the span of the active ones, so the system stays regular: Lawson-Hanson's rule, batched)
            c = torch.where(~at & ok, c, math.inf)
            worst = c.argmin(1, keepdim=True)
            add = torch.zeros_like(at).scatter_(1, worst, (c.gather(1, worst) < -eps[todo, None]))
            new = (at & (mt > 0)) | add
            settled = regular & (new == at).all(1)
            done[todo] = settled
            act[todo] = torch.where(regular[:, None], new, at)
            todo = todo[~settled]
            if len(todo) == 0:
                break
        if return_mu:
            return mu
        u = z + (M_all.transpose(1, 2) @ mu.unsqueeze(-1)).squeeze(-1)
        return u, act, done

    def _screen(self, u: Tensor, gate: Tensor, ids: Tensor, K: int) -> None:
        """Rebuild the screening state (see `_check`) of columns ids at u: the K rows of smallest normalised
        margin and tau, the (K+1)-th smallest."""
        p = self.p
        low_q = torch.full((len(ids), 0), np.inf, dtype=p.X.dtype, device=p.X.device)
        low_i = torch.zeros((len(ids), 0), dtype=torch.long, device=p.X.device)
        ux = u.to(p.X.dtype)
        for r in p.blocks():
            q = self.ST[gate, r].to(p.X.dtype) * (ux @ p.X[r].T) * self.xinv[r] + self.qpad[r]     # (b, m)
            k = min(K + 1, q.shape[1])
            v, i = q.topk(k, dim=1, largest=False, sorted=False)
            low_q, pos = torch.cat([low_q, v], 1).topk(min(K + 1, low_q.shape[1] + k), dim=1, largest=False)
            low_i = torch.cat([low_i, i + r.start], 1).gather(1, pos)
        self.ref[ids] = u
        self.cand[ids] = low_i[:, :K]
        self.tau[ids] = (low_q[:, K].to(p.dtype) if low_q.shape[1] > K
                         else torch.full((len(ids),), math.inf, dtype=p.dtype, device=p.X.device))

    def norm_upper(self, Z: Tensor) -> Tensor:
        """Certified upper bounds on ||proj_K(z)|| for every column of Z (..., P, d, c), shaped (..., P, c), from
        the rows this projector remembers (its last projections' active rows), no pass over the patches:
        ||proj_K(z)|| = dist(z, K°) <= ||z + A^T mu|| for any mu >= 0 (-A^T mu lies in the polar cone K°), mu
        the NNLS solution on those rows (batched active set; clamped to >= 0, so the bound holds whether or
        not it settled). Tight when the rows are z's own active set: for the gradient at an iterate of the
        projected solver they are the prox's active rows, which are the optimum's near convergence."""
        z = columns(Z)
        upper = z.norm(dim=1)
        if self.rows is not None and self.rows.shape[0] == z.shape[0] and self.rows.shape[1]:
            cols = torch.nonzero((self.rows >= 0).any(1)).flatten()
            if len(cols):
                rows = self.rows[cols]
                gate = column_gates(Z.shape).to(Z.device)[cols]
                mu = self._active_set(z[cols], gate, rows, rows >= 0, torch.zeros(len(cols), dtype=z.dtype),
                                      return_mu=True)
                M = self._A(rows, gate)
                u = z[cols] + (M.transpose(1, 2) @ mu.clamp_min(0).unsqueeze(-1)).squeeze(-1)
                upper[cols] = torch.minimum(upper[cols], u.norm(dim=1))
        return upper.reshape(*Z.shape[:-2], Z.shape[-1])

    def _nnls(self, z: Tensor, gate: int, rows: np.ndarray) -> tuple[Tensor, np.ndarray]:
        A = self._A(torch.as_tensor(rows, device=z.device)[None], torch.tensor([gate], device=z.device))[0]
        An, zn = A.cpu().numpy(), z.cpu().numpy()
        mu, _ = nnls(An.T, -zn, maxiter=50 * max(len(rows), 1))
        return torch.from_numpy(zn + An.T @ mu).to(z), mu

    def _check(self, u: Tensor, gate: Tensor, ids: Tensor, tol: Tensor) -> tuple[Tensor, Tensor]:
        """Per column: the largest violation and the `add` most violated rows (global indices, -1 if fewer).

        Screening (safe, no row skipped that could be violated): a full pass over the patches also keeps, per
        column, its reference point u_ref, the `screen` rows of smallest normalised margin
        q_j = (2 D_i - I)_j x_j^T u_ref / ||x_j|| and tau, the smallest q_j of the other rows. Then for any u
        with ||u - u_ref|| < tau every other row has (2 D_i - I)_j x_j^T u >= ||x_j|| (q_j - ||u - u_ref||) > 0
        (Cauchy-Schwarz): only the kept rows are checked. Consecutive iterates of a converging solver move
        little, so most checks touch `screen` rows, not n. The screening set is rebuilt only for the columns
        that pass (violation <= tol): their u is this projection's answer, the next call's reference; and only
        when the column moved less than `rebuild` x tau since its last accepted point (or has no state yet).
        At n = 20,000 (P = 128) rebuilding after every far move cost 8.5 of 30 s; skipped, 1.0 s."""
        p = self.p
        B = u.shape[0]
        viol = torch.zeros(B, dtype=p.dtype, device=p.X.device)
        worst = torch.full((B, self.add), -1, dtype=torch.long, device=p.X.device)
        if self.ref is None or self.ref.shape[0] != self.ncols:
            self.ref = torch.zeros((self.ncols, u.shape[1]), dtype=p.dtype, device=p.X.device)
            self.tau = torch.zeros(self.ncols, dtype=p.dtype, device=p.X.device)
            self.cand = torch.zeros((self.ncols, min(self.screen, p.n)), dtype=torch.long, device=p.X.device)
            self.last = torch.full((self.ncols, u.shape[1]), math.nan, dtype=p.dtype, device=p.X.device)
        moved = (u - self.ref[ids]).norm(dim=1)
        step = (u - self.last[ids]).norm(dim=1)          # since the column's last accepted point (nan: none)
        # rounding of the margins (X's dtype) taken off tau, so the test stays safe with float32 patches
        screened = moved < self.tau[ids] - 8 * torch.finfo(p.X.dtype).eps * (u.norm(dim=1) + self.ref[ids].norm(dim=1))
        chunk = max(1, 2**22 // max(self.cand.shape[1] * u.shape[1], 1))
        for part in torch.nonzero(screened).flatten().split(chunk):
            rows = self.cand[ids[part]]                                             # (b, K)
            sign = self.ST[gate[part]].gather(1, rows).to(p.X.dtype)
            neg = -(sign * (p.X[rows] @ u[part].to(p.X.dtype).unsqueeze(-1)).squeeze(-1))   # (b, K)
            viol[part] = neg.amax(1).to(p.dtype)
            v, i = neg.topk(min(self.add, neg.shape[1]), dim=1)
            worst[part, :v.shape[1]] = torch.where(v > 0, rows.gather(1, i), -1)
        full = torch.nonzero(~screened).flatten()
        if len(full):
            uf, gf = u[full].to(p.X.dtype), gate[full]
            K = self.cand.shape[1]
            best_v = torch.full((len(full), 0), -np.inf, dtype=p.X.dtype, device=p.X.device)
            best_i = torch.zeros((len(full), 0), dtype=torch.long, device=p.X.device)
            vf = torch.zeros(len(full), dtype=p.dtype, device=p.X.device)
            for r in p.blocks():
                neg = -(self.ST[gf, r].to(p.X.dtype) * (uf @ p.X[r].T))                   # (b, m)
                vf = torch.maximum(vf, neg.amax(1).to(p.dtype))
                k = min(self.add, neg.shape[1])
                v, i = neg.topk(k, dim=1)
                best_v, pos = torch.cat([best_v, v], 1).topk(min(self.add, best_v.shape[1] + k), dim=1)
                best_i = torch.cat([best_i, i + r.start], 1).gather(1, pos)
            viol[full] = vf
            worst[full, :best_v.shape[1]] = torch.where(best_v > 0, best_i, -1)
            passed = full[vf <= tol[full]]
            # a rebuild costs a top-K over every row: done only where it can pay, for a column never screened or
            # one whose last move was within `rebuild` x its tau (early iterates move far, and a state rebuilt
            # for them fails the next test anyway). Skipping is safe: the old (ref, tau) pair stays valid.
            passed = passed[(self.tau[ids[passed]] == 0) | ~(step[passed] >= self.rebuild * self.tau[ids[passed]])]
            self.rebuilt += len(passed)
            if len(passed) and time.perf_counter() <= self.deadline:   # (an optimisation: none past the limit)
                self._screen(u[passed], gate[passed], ids[passed], K)
        ok = viol <= tol
        self.last[ids[ok]] = u[ok]
        self.full_checks += len(full)
        self.screened_checks += int(screened.sum())
        return viol.clamp_min(0), worst.T

    def project(self, Z: Tensor, live: Tensor | None = None) -> Tensor:
        """proj onto the cones, column by column, of Z (..., P, d, c) (float64); columns where `live` (the
        column-shaped mask (..., P, c)) is False are returned as 0. Sets last_violation."""
        shape, dev = Z.shape, Z.device
        z = columns(Z)
        B = z.shape[0]
        if self.rows is None or self.rows.shape[0] != B:
            self.rows = torch.full((B, 0), -1, dtype=torch.long, device=dev)
        self.ncols = B
        out = torch.zeros_like(z)
        cols = torch.arange(B, device=dev) if live is None else torch.nonzero(live.reshape(-1)).flatten()
        self.last_violation, self.last_rounds = 0.0, 0
        if len(cols) == 0:
            return uncolumns(out, shape)
        zc, gate = z[cols], column_gates(shape).to(dev)[cols]
        tol = self.tol if isinstance(self.tol, Tensor) else torch.full((B,), float(self.tol))
        tol = tol.to(device=dev, dtype=self.p.dtype)[cols]
        R = self.rows[cols]                                # working rows; the remembered ones start active
        act = R >= 0
        u = zc.clone()
        pending = torch.arange(len(cols), device=dev)
        viol_all = torch.zeros(len(cols), dtype=self.p.dtype, device=dev)
        for rnd in range(self.max_rounds + 1):
            if R.shape[1]:
                # the remembered active sets by the batched active-set iterations (settles at once when the
                # faces did not change); new rows by scipy's Lawson-Hanson NNLS (faster from a cold start)
                if rnd == 0:
                    up, ap, done = self._active_set(zc[pending], gate[pending], R[pending], act[pending],
                                                    tol[pending] / 10)
                else:
                    up, ap = u[pending].clone(), act[pending].clone()
                    done = torch.zeros(len(pending), dtype=torch.bool, device=dev)
                for j in torch.nonzero(~done).flatten().tolist():
                    if time.perf_counter() > self.deadline:
                        break     # the rest keep the last round's points; the check reports their violation
                    rows = R[pending[j]]
                    keep = rows >= 0
                    uj, mu = self._nnls(zc[pending[j]], int(gate[pending[j]]), rows[keep].cpu().numpy())
                    up[j] = uj
                    ap[j] = False
                    ap[j, torch.nonzero(keep).flatten()] = torch.as_tensor(mu > 0, device=dev)
                u[pending], act[pending] = up, ap
            viol, worst = self._check(u[pending], gate[pending], cols[pending], tol[pending])
            viol_all[pending] = viol
            bad = viol > tol[pending]
            self.last_rounds = rnd
            if not bool(bad.any()) or rnd == self.max_rounds or time.perf_counter() > self.deadline:
                break
            pending = pending[bad]
            # working rows = the active ones (compacted) + the most violated new ones
            R = _compact(torch.where(act, R, -1))
            act = R >= 0
            grow = torch.full((len(cols), worst.shape[0]), -1, dtype=torch.long, device=dev)
            grow[pending] = worst[:, bad].T
            R = torch.cat([R, grow], 1)
            act = torch.cat([act, torch.zeros_like(grow, dtype=torch.bool)], 1)
        # remember only the active rows, compacted, as the next call's warm start
        R = _compact(torch.where(act, R, -1))
        k = R.shape[1]
        if k > self.rows.shape[1]:
            self.rows = torch.cat([self.rows, torch.full((B, k - self.rows.shape[1]), -1, dtype=torch.long,
                                                         device=dev)], 1)
        self.rows[cols] = -1
        self.rows[cols, :k] = R
        self.last_violation = float(viol_all.max())
        out[cols] = u
        return uncolumns(out, shape)

    def norm_bounds(self, Z: Tensor, live: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Certified (lower, upper) bounds on ||proj_K(z)|| for every column of Z, shaped (..., P, c); columns
        outside `live` get (0, ||z||) (0 is in K; K is inside R^d)."""
        proj = columns(self.project(Z, live))
        z = columns(Z)
        gate = column_gates(Z.shape).to(Z.device)
        upper = z.norm(dim=1)
        lower = torch.zeros_like(upper)
        cols = torch.arange(z.shape[0], device=Z.device) if live is None else torch.nonzero(live.reshape(-1)).flatten()
        if len(cols):
            u = proj[cols]
            upper[cols] = u.norm(dim=1)        # = ||z + A^T mu|| with mu >= 0: an upper bound in any case
            shifted = u + gate_shift_columns(self.p, u, gate[cols])[:, None] * self.p.gates[:, gate[cols]].T.to(u)
            lower[cols] = ((shifted * z[cols]).sum(1) / shifted.norm(dim=1).clamp_min(1e-300)).clamp_min(0)
        lead = Z.shape[:-2]
        return lower.reshape(*lead, Z.shape[-1]), upper.reshape(*lead, Z.shape[-1])


def group_values(problem: ConvexProblem, per_column: Tensor) -> Tensor:
    """Column values (..., P, c) -> group values: themselves ("channel") or the 2-norm over c ("pattern");
    monotone in every column, so bounds on the columns bound the groups."""
    return per_column if problem.group_by == "channel" else per_column.norm(dim=-1)


def relu_threshold(problem: ConvexProblem, rtol: float = 1e-6, max_rounds: int = 200) -> tuple[float, float]:
    """Certified bracket (lower, upper) of the ReLU program's zero threshold: 0 is optimal iff lam >= the
    threshold, so lam >= upper certifies a zero optimum and lam < lower certifies a nonzero one.

    Each cone norm is computed to violation tol rtol ||z|| max_j ||x_j||; only the groups whose trivial
    upper bound (||h||, the gated threshold's) exceeds the best trivial lower bound are projected."""
    H = problem.predict_adjoint(problem.Y) / problem.n                           # (P, d, c) = -grad at 0
    Z = torch.stack([H, -H])                                                     # directions V and W
    z = columns(Z)
    gate = column_gates(Z.shape).to(Z.device)
    # cheap bounds first: upper ||h||, lower from h shifted into its cone
    upper0 = z.norm(dim=1)
    shifted = z + gate_shift_columns(problem, z, gate)[:, None] * problem.gates[:, gate].T.to(z)
    lower0 = ((shifted * z).sum(1) / shifted.norm(dim=1).clamp_min(1e-300)).clamp_min(0)
    shape = Z.shape[:-2] + Z.shape[-1:]
    g_up = group_values(problem, upper0.reshape(shape))
    g_lo = group_values(problem, lower0.reshape(shape))
    live_groups = g_up > g_lo.max()
    live = live_groups if problem.group_by == "channel" else live_groups.unsqueeze(-1).expand(shape)
    xmax = float(problem.X.norm(dim=1).max())
    proj = ConeProjector(problem, tol=rtol * xmax * upper0.to(problem.dtype), max_rounds=max_rounds)
    lo, up = proj.norm_bounds(Z, live)
    lo = torch.maximum(lo, lower0.reshape(shape))
    up = torch.minimum(up, upper0.reshape(shape))
    lower, upper = float(group_values(problem, lo).max()), float(group_values(problem, up).max())
    return min(lower, upper), upper   # (they can cross by a rounding error when the bracket is closed)
