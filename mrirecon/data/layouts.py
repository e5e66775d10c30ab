"""On-disk HDF5 layouts read by the readers (`readers/`) and written by the synthetic generator; each data kind
(`kinds.py`) names its layout.

One place defines them; `data/README.md` documents them for users.

fastMRI multi-coil (knee2d, brain2d), exactly as distributed by fastMRI:
    kspace              complex64 (slices, coils, H, W)   H = readout (2x oversampled), W = phase encode
    reconstruction_rss  float32   (slices, rH, rW)        RSS of the fully sampled coil images, cropped
                                                          to the recon size (rH, rW) (absent in test sets)
    ismrmrd_header      bytes (XML)                       encodedSpace/reconSpace matrix sizes,
                                                          encodingLimits/kspace_encoding_step_1 center/maximum
    attrs               acquisition (str), max (float), norm (float), patient_id (str)
    mask                bool/float (W,) optional          only in fastMRI's undersampled test/challenge files,
                                                          with attrs acceleration, num_low_frequency

mridata-style 3D (knee3d): the readout is fully sampled and already inverse-Fourier-transformed
(hybrid space), so each readout position is an independent ky-kz problem (GLEAM, meddlr):
    kspace              complex64 (X, coils, Ky, Kz)      X = readout in image space
    reconstruction_rss  float32   (X, Ky, Kz)             RSS of the fully sampled coil images
    attrs               acquisition="3D-FSE", max, norm, patient_id

Cine 2D+t (modelled on CMRxRecon's `kspace_full` (t, sz, sc, ky, kx), re-ordered slice-first):
    kspace              complex64 (slices, frames, coils, H, W)  H = readout, W = phase encode (ky)
    reconstruction_rss  float32   (slices, frames, H, W)
    attrs               acquisition="CINE", max, norm, patient_id, frame_period_ms (float)

Coil sensitivities (in the maps cache, `mrirecon.data.coil_maps`; files of earlier versions hold them too):
    espirit_maps        complex64 (slices, maps, coils, *spatial of one slice): fastMRI (S, M, C, H, W),
                        knee3d one set per ky-kz slice (X, M, C, Ky, Kz), cine (S, M, C, H, W) shared
                        by all frames
    espirit_maps.attrs  calib_width, kernel_width, thresh, crop, num_maps

Synthetic files (mrirecon.synthetic) keep `reconstruction_rss` in every split, test included,
so that every split can be scored (fastMRI's own test sets hold undersampled data without it).
"""
from __future__ import annotations

from dataclasses import dataclass

KSPACE = "kspace"
TARGET = "reconstruction_rss"
HEADER = "ismrmrd_header"
MAPS = "espirit_maps"
PREDICTION = "reconstruction"  # fastMRI prediction files


@dataclass(frozen=True)
class Layout:
    name: str
    kspace_ndim: int        # ndim of the `kspace` array
    slice_axis: int         # axis of `kspace` indexed by slice-level datasets
    coil_axis: int          # axis of coils in `kspace`
    needs_header: bool      # fastMRI files carry an ISMRMRD header
    acquisitions: tuple[str, ...] = ()


FASTMRI = Layout("fastmri", kspace_ndim=4, slice_axis=0, coil_axis=1, needs_header=True,
                 acquisitions=("CORPD_FBK", "CORPDFS_FBK", "AXT1", "AXT1PRE", "AXT1POST", "AXT2", "AXFLAIR"))
KNEE3D = Layout("knee3d", kspace_ndim=4, slice_axis=0, coil_axis=1, needs_header=False, acquisitions=("3D-FSE",))
CINE = Layout("cine", kspace_ndim=5, slice_axis=0, coil_axis=2, needs_header=False, acquisitions=("CINE",))

SPLITS = ("train", "val", "test")
