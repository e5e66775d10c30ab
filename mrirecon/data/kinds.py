"""Data kinds: the one table every other place reads (config checks, datasets, the generator, the demo,
training, evaluation and tuning).

A data kind is one `DataKind` entry: its name, its file layout, the reader of its files, its geometry (FFT
dims, convolution dims, and the geometry of whole volumes where it has one), whether evaluation crops images
to each file's recon size (fastMRI's convention), the mask it is undersampled with unless a config names
one, and which coil maps it supports (`maps`: the `data.maps` values). Registering one
(`register_kind(DataKind(...))`, e.g. from a test or a user's module) is all a new kind takes: nothing in
the package names the kinds.

Built in:
    knee2d, brain2d  fastMRI multi-coil HDF5 (readers/fastmri.py), 2D slices, crop to the recon size
    knee3d           mridata-style 3D HDF5 (readers/mridata.py), ky-kz slices (2D) or whole volumes (3D)
    cine             2D+t: the synthetic cine HDF5 layout or a CMRxRecon folder (readers/cine.py), FFT over
                     (H, W), 3D convolutions over (t, x, y)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import ConfigError, DataConfig, register_section_check
from . import layouts as L
from .masks import build_mask_func
from .readers.base import ReadOptions, Reader
from .readers.cine import open_cine, recognises_cine
from .readers.fastmri import FastmriReader
from .readers.mridata import MridataReader


@dataclass(frozen=True)
class Geometry:
    """How a kind of data maps onto the network: FFT dims and convolution dims."""
    fft_ndim: int
    conv_dims: int


@dataclass(frozen=True)
class DataKind:
    """One row of the table: what the rest of the framework needs to know about a kind of data."""
    name: str
    reader: Callable[[Path, "DataKind", ReadOptions], Reader]  # builds the reader of one folder
    geometry: Geometry
    layout: L.Layout | None = None            # its HDF5 file layout (maps cache, naming files of another kind)
    volume_geometry: Geometry | None = None   # whole volumes (data.volume: true); None: the kind has none
    eval_crop: bool = False                   # score images centre-cropped to each file's recon size (fastMRI)
    default_mask: Mapping[str, Any] = field(default_factory=dict)  # data.mask unless a config names one
    maps: tuple[str, ...] = ("file", "online")  # the data.maps values it supports
    frames: bool = False                      # items are time series (cine scores, per-frame rows, figures)
    recognises: Callable[[Path], bool] | None = None  # does a folder hold this kind (default: reader.recognises)

    def geometry_for(self, volume: bool = False) -> Geometry:
        if not volume:
            return self.geometry
        if self.volume_geometry is None:
            raise ValueError(f"data kind {self.name!r} has no whole volumes (data.volume)")
        return self.volume_geometry

    def holds(self, root: Path) -> bool:
        """Whether the folder `root` holds data of this kind (a cheap look at its layout)."""
        if self.recognises is not None:
            return bool(self.recognises(root))
        check = getattr(self.reader, "recognises", None)
        return bool(check(root, self)) if check is not None else False


_KINDS: dict[str, DataKind] = {}


def register_kind(kind: DataKind) -> DataKind:
    """Add a data kind to the table (ValueError if the name is taken)."""
    if kind.name in _KINDS:
        raise ValueError(f"data kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def registered_kinds() -> list[str]:
    """Names of the registered data kinds, in registration order."""
    return list(_KINDS)


def get_kind(name: str) -> DataKind:
    if name not in _KINDS:
        raise ValueError(f"unknown data kind {name!r}; registered: {registered_kinds()}")
    return _KINDS[name]


def geometry(kind: str, volume: bool = False) -> Geometry:
    """The geometry of `kind` (of its whole volumes with `volume`)."""
    return get_kind(kind).geometry_for(volume)


def kinds_by_acquisition(acquisition: str) -> list[str]:
    """The kinds whose files carry this `acquisition` attribute (e.g. "CINE" -> ["cine"])."""
    return [k.name for k in _KINDS.values() if k.layout is not None and acquisition in k.layout.acquisitions]


def folder_kinds(root: str | Path) -> list[str]:
    """The kinds whose layout the folder `root` holds (empty when none is recognised)."""
    return [k.name for k in _KINDS.values() if k.holds(Path(root))]


def _check_kind_section(cfg: Any) -> None:
    """data.kind names a registered kind, data.volume and data.maps are ones it has; a config that names no
    mask (the schema's default) gets the kind's default mask."""
    d = cfg.data
    if d.kind not in _KINDS:
        raise ConfigError(f"data.kind: {d.kind!r} is not one of {registered_kinds()}")
    kind = _KINDS[d.kind]
    if d.volume and kind.volume_geometry is None:
        with_volumes = [k.name for k in _KINDS.values() if k.volume_geometry is not None]
        raise ConfigError(f"data.volume: data kind {d.kind!r} has no whole volumes (only {with_volumes})")
    if d.maps not in kind.maps:
        raise ConfigError(f"data.maps: {d.maps!r} is not supported by data kind {d.kind!r} (supported: "
                          f"{list(kind.maps)})")
    if kind.default_mask and d.mask == DataConfig().mask:
        d.mask = dict(kind.default_mask)
        build_mask_func(d.mask)  # the data.mask check may have run before this one


register_section_check("data.kind", _check_kind_section)

# The schema's default for the fastMRI kinds (configs/brain2d.yaml sets GLEAM's 8x brain mask itself; a default
# that differed would change the mask of a checkpoint trained without one); knee3d and cine as their configs.
_KNEE2D_MASK = {"name": "random", "center_fractions": [0.08], "accelerations": [4]}
register_kind(DataKind("knee2d", FastmriReader, Geometry(2, 2), L.FASTMRI, eval_crop=True,
                       default_mask=_KNEE2D_MASK))
register_kind(DataKind("brain2d", FastmriReader, Geometry(2, 2), L.FASTMRI, eval_crop=True,
                       default_mask=_KNEE2D_MASK))
register_kind(DataKind("knee3d", MridataReader, Geometry(2, 2), L.KNEE3D, volume_geometry=Geometry(3, 3),
                       default_mask={"name": "poisson", "accelerations": [8], "calib_size": [12, 12]}))
register_kind(DataKind("cine", open_cine, Geometry(2, 3), L.CINE, frames=True,
                       recognises=lambda root: recognises_cine(root, None),
                       default_mask={"name": "kyt", "center_fractions": [0.08], "accelerations": [8]}))
