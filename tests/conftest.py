import os
import tempfile

import numpy as np
import pytest
import torch

# Coil maps and mask banks built during tests go to a throw-away cache, never into ~/.cache.
os.environ.setdefault("MRIRECON_MAPS_CACHE", tempfile.mkdtemp(prefix="mrirecon-maps-"))
os.environ.setdefault("MRIRECON_MASK_CACHE", tempfile.mkdtemp(prefix="mrirecon-masks-"))  # Poisson mask banks

# Tiny tensors: one thread is much faster than two (thread start-up dominates), and
# keeps timings stable on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def crandn(rng, *shape, dtype=np.complex64):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


TINY = {
    "knee2d": dict(volumes=3, coils=4, slices=2, size=(32, 32)),
    "brain2d": dict(volumes=3, coils=4, slices=2, size=(32, 32)),
    "knee3d": dict(volumes=3, coils=4, size=(4, 32, 24)),
    "cine": dict(volumes=3, coils=4, slices=1, frames=6, size=(32, 32)),
}


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """Tiny synthetic datasets with cached ESPIRiT maps, built once per test session: synthetic(kind) -> root."""
    from mrirecon.data.coil_maps import embed_maps
    from mrirecon.synthetic.generator import generate

    roots = {}

    def get(kind: str):
        if kind not in roots:
            root = tmp_path_factory.mktemp(kind)
            generate(kind, root, seed=0, **TINY[kind])
            embed_maps(root, kind=kind, calib_width=12)  # test fixtures carry their maps (older layout)
            roots[kind] = root
        return roots[kind]

    return get
