"""Proximal networks; importing this package registers the built-in kinds ("resnet", "unet")."""
from .resnet import ResNetProx, SpectralNormConv
from .unet import UNetProx

__all__ = ["ResNetProx", "SpectralNormConv", "UNetProx"]
