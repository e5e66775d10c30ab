"""Proximal networks; importing this package registers the built-in kinds (`registered_prox()` lists them:
resnet, unet, scale_equivariant, rotation_equivariant, and the cine kinds of spatiotemporal.py)."""
from .conv_norm import NormBoundedConv
from .resnet import ResNetProx
from .rotation_equivariant import RotationEquivariantProx
from .scale_equivariant import ScaleEquivariantProx
from .spatiotemporal import FramewiseProx, ResNet2Plus1dProx  # 2D+t cine proxes (issue 12)
from .unet import UNetProx

__all__ = ["FramewiseProx", "NormBoundedConv", "ResNet2Plus1dProx", "ResNetProx", "RotationEquivariantProx",
           "ScaleEquivariantProx", "UNetProx"]
