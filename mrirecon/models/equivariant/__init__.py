"""Equivariant layers: scale-equivariant convolutions over features (B, C, S, H, W) with fixed kernel bases."""
from .basis import BASES, dilated_basis, hermite_basis, scale_basis
from .layers import PROJECTIONS, LiftingConv, ScaleConv, project_scales

__all__ = ["BASES", "PROJECTIONS", "LiftingConv", "ScaleConv", "dilated_basis", "hermite_basis", "project_scales",
           "scale_basis"]
