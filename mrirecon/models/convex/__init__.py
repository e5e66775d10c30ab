"""Convex dual denoisers: two-layer ReLU conv denoisers trained to global optimality by convex solvers
(Sahiner et al., ICLR 2021; Mishkin, Sahiner and Pilanci, ICML 2022), used as proximal networks.

    patches.py    images -> patch matrix X (one row per output pixel)
    problem.py    sign patterns from random gates; the gated-ReLU and exact ReLU convex programs, their linear
                  maps (Gram matrix or matrix-free by row blocks, float32 patches with float64 sums), lam_max
                  and the dual bound
    cones.py      projections onto the ReLU program's cones (constraint generation + NNLS), certified cone
                  norms, the ReLU program's own zero threshold
    solvers.py    R-FISTA (gated), projected R-FISTA / augmented Lagrangian (ReLU), cone decomposition;
                  duality-gap certificates and the one stopping rule (`certified`)
    network.py    the conv networks a solution maps to: two-layer ReLU (ReLU program), gated ReLU (gated)
    prox.py       the registered prox "convex_dual" (fixed or fine-tuned)
    fit.py        `mrirecon convex fit`: standalone fit on the training split
    interpret.py  regularisation path and per-pixel effective filters
"""
from .network import GatedReLUConv, TwoLayerReLUConv, gated_to_network, relu_to_network
from .problem import ConvexProblem, sample_gates
from .prox import ConvexDualProx
from .solvers import (SolverDiverged, SolverResult, certified, cone_decomposition, repair_feasibility, solve_gated,
                      solve_relu)

__all__ = ["ConvexDualProx", "ConvexProblem", "GatedReLUConv", "SolverDiverged", "SolverResult", "TwoLayerReLUConv",
           "certified", "cone_decomposition", "gated_to_network", "relu_to_network", "repair_feasibility",
           "sample_gates", "solve_gated", "solve_relu"]
