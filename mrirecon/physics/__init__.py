"""MRI physics: centered FFTs, the multi-coil SENSE operator, CG, coil combination, ESPIRiT maps."""
from .cg import conjugate_gradient
from .coil_combine import channels_to_complex, complex_to_channels, rss
from .fft import fftc, ifftc
from .sense import SenseOp

__all__ = ["SenseOp", "channels_to_complex", "complex_to_channels", "conjugate_gradient", "fftc", "ifftc", "rss"]
from .espirit import espirit_maps  # noqa: E402

__all__ += ["espirit_maps"]
