"""Convex dual denoisers: two-layer ReLU conv denoisers trained to global optimality by convex solvers
(Sahiner et al., ICLR 2021; Mishkin, Sahiner and Pilanci, ICML 2022), used as proximal networks.

    patches.py    images -> patch matrix X (one row per output pixel)
    problem.py    sign patterns from random gates; the gated-ReLU and exact ReLU convex programs
    solvers.py    R-FISTA (gated), augmented Lagrangian (ReLU), cone decomposition
    network.py    the ordinary two-layer ReLU conv network a solution maps to
    prox.py       the registered prox "convex_dual" (fixed or fine-tuned)
    fit.py        `python -m mrirecon.models.convex.fit`: standalone fit on the training split
    interpret.py  regularisation path and per-pixel effective filters
"""
from .network import TwoLayerReLUConv, relu_to_network
from .problem import ConvexProblem, sample_gates
from .prox import ConvexDualProx
from .solvers import SolverDiverged, SolverResult, cone_decomposition, repair_feasibility, solve_gated, solve_relu

__all__ = ["ConvexDualProx", "ConvexProblem", "SolverDiverged", "SolverResult", "TwoLayerReLUConv",
           "cone_decomposition", "relu_to_network", "repair_feasibility", "sample_gates", "solve_gated", "solve_relu"]
