"""The CMRxRecon multi-coil cine layout (MICCAI 2023 challenge) as distributed, read with h5py.

Confirmed against the challenge's own repository (CmrxRecon/CMRxRecon: `ChallengeDataFormat/Format_cine.txt`,
`ChallengeDataFormat/loadFun.py`, `Evaluation/Main_Score.py`):

    MultiCoil/Cine/TrainingSet/{FullSample, AccFactor04, AccFactor08, AccFactor10}/P001/
        cine_sax.mat        key `kspace_full` (FullSample) or `kspace_sub04` / `kspace_sub08` / `kspace_sub10`
        cine_lax.mat        the same for the long-axis views (3ch, 2ch, 4ch in the slice dim)
        cine_sax_mask.mat   key `mask04` / `mask08` / `mask10` (AccFactor folders only), also cine_lax_mask.mat
    (ValidationSet has only the AccFactor folders.)

Files are MATLAB v7.3 (HDF5 inside, a 512-byte MATLAB header in the userblock). MATLAB's dims
(kx, ky, coils, slices, frames) appear reversed to h5py: (frames, slices, coils, ky, kx). Complex data is
an HDF5 compound of `real` and `imag`. Masks are (kx, ky) in MATLAB, (ky, kx) in h5py: equispaced ky lines
with the central 24 ky lines always sampled, the same for every coil, slice and frame.

One sample = one slice of one file, all frames, as the synthetic cine layout: kspace (C, T, H, W) with
H = kx (readout) and W = ky (phase encode). With FullSample data the target is the fully sampled SENSE
image and the mask is the acquired one of AccFactorRR when that folder has the patient (never a simulated
one); without FullSample the undersampled k-space and its mask are read and there is no reference.

A data folder is recognised as CMRxRecon when it holds `FullSample` or `AccFactorRR` folders, or
`MultiCoil/Cine/TrainingSet` (or `ValidationSet`) below it; the cine kind's reader (`readers.cine.open_cine`)
then reads it with `CmrxReconReader`. Training and validation need every patient's FullSample (the reference):
a patient with only AccFactor folders, or a split link whose target is gone, is named before any training.
The challenge's sampling pattern (for simulated masks) is `masks.cmrxrecon.CmrxReconMask`.
Split a TrainingSet into train/val/test folders (symbolic links, nothing copied) with
`mrirecon cmrxrecon split --training-set DIR --out DIR`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ...atomic import atomic_path
from ..errors import DataError
from ..masks import CmrxReconMask, check_mask_values
from ..masks.cmrxrecon import synthetic_centre_lines
from .base import RawSlice, ReadOptions, Reader, keep_fraction

FULL_FOLDER = "FullSample"
ACC_FOLDER = re.compile(r"^AccFactor(\d\d)$")
VIEWS = ("cine_sax", "cine_lax")
FULL_KEY = "kspace_full"
MAT73_HEADER = b"MATLAB 7.3 MAT-file"
SUBSETS = ("TrainingSet", "ValidationSet", "TestSet")


def acc_folder(acceleration: int) -> str:
    return f"AccFactor{acceleration:02d}"


def sub_key(acceleration: int) -> str:
    return f"kspace_sub{acceleration:02d}"


def mask_key(acceleration: int) -> str:
    return f"mask{acceleration:02d}"


# ---------------------------------------------------------------------------------------------------
# MATLAB v7.3 files


def _old_matlab_format(path: Path) -> str | None:
    """The header text of a pre-v7.3 MAT-file (v4 has none; v5/v6/v7 start with 'MATLAB 5.0 MAT-file')."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB") and not head.startswith(MAT73_HEADER):
        return head[:116].split(b",")[0].decode("ascii", "replace").strip()
    return None


def open_mat(path: str | os.PathLike) -> h5py.File:
    """Open a MATLAB v7.3 .mat file for reading; DataError for anything else, with how to convert it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        old = _old_matlab_format(path)
        if old:
            raise DataError(path, f"a MATLAB file in a format before v7.3 ({old!r}); h5py reads only v7.3 "
                            f"(HDF5) files. Convert it in MATLAB: s = load('{path.name}'); "
                            f"save('{path.name}', '-struct', 's', '-v7.3')") from None
        raise DataError(path, f"not a MATLAB v7.3 / HDF5 file (truncated or corrupt?): {e}") from None


def _dataset(path: Path, f: h5py.File, key: str) -> h5py.Dataset:
    if key not in f or not isinstance(f[key], h5py.Dataset):
        found = sorted(k for k in f.keys() if not k.startswith("#"))  # '#refs#' is MATLAB's bookkeeping
        raise DataError(path, f"missing key (file has {found})", key=key)
    return f[key]


def _check_kspace(path: Path, d: h5py.Dataset, key: str) -> tuple[int, ...]:
    """(frames, slices, coils, ky, kx) complex compound; returns the shape."""
    names = d.dtype.names or ()
    if d.ndim != 5 or not {"real", "imag"} <= set(names):
        what = f"a {d.ndim}-d array of dtype {d.dtype}"
        raise DataError(path, f"expected complex multi-coil cine k-space (a compound of real and imag) with h5py "
                        f"dims (frames, slices, coils, ky, kx), MATLAB's (kx, ky, coils, slices, frames); got "
                        f"{what}", key=key)
    if 0 in d.shape:
        raise DataError(path, f"empty k-space, shape {d.shape}", key=key)
    if d.shape[0] < 2:
        raise DataError(path, f"{d.shape[0]} frame (h5py dim 0 of (frames, slices, coils, ky, kx)): a cine needs "
                        "at least 2 frames; is this a single-frame or a transposed file?", key=key)
    return tuple(d.shape)


def _complex(a: np.ndarray) -> np.ndarray:
    return (a["real"] + 1j * a["imag"]).astype(np.complex64)


def read_mask(path: Path, key: str, ky: int, kx: int) -> np.ndarray:
    """The acquired ky lines (ky,) as float32 0/1, from a (ky, kx) h5py (MATLAB (kx, ky)) mask."""
    with open_mat(path) as f:
        d = _dataset(path, f, key)
        m = np.asarray(d[()])
    if m.dtype.names:
        raise DataError(path, f"a mask must be real 0/1 values, got a compound dtype {m.dtype}", key=key)
    if m.shape == (kx, ky) and m.shape != (ky, kx):
        hint = " (transposed: h5py shows MATLAB's (kx, ky) as (ky, kx))"
    else:
        hint = ""
    if m.shape != (ky, kx):
        raise DataError(path, f"mask shape {m.shape} does not match the k-space: expected (ky, kx) = ({ky}, {kx}) in "
                        f"h5py order, MATLAB's (kx, ky){hint}", key=key)
    check_mask_values(m, path, key)
    lines = m != 0
    if not (lines == lines[:, :1]).all():
        raise DataError(path, "mask is not a set of ky lines (it varies along kx); the challenge's masks sample "
                        "whole ky lines", key=key)
    return lines[:, 0].astype(np.float32)


def _userblock_header() -> bytes:
    text = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 "
            b"HDF5 schema 1.00 .").ljust(116, b" ")
    # subsystem offset (8 bytes), version 0x0200, endian indicator 'IM' (MATLAB's layout of a v7.3 header)
    return text + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat73(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write a MATLAB v7.3 .mat file atomically (HDF5 with MATLAB's 512-byte header and class attributes).

    Complex arrays are stored as a compound of `real` and `imag`, as MATLAB does. Arrays are written in
    h5py order: the reverse of the dims MATLAB will show."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            for key, value in arrays.items():
                value = np.asarray(value)
                if np.iscomplexobj(value):
                    part = np.float32 if value.dtype == np.complex64 else np.float64
                    data = np.empty(value.shape, dtype=[("real", part), ("imag", part)])
                    data["real"], data["imag"] = value.real, value.imag
                else:
                    data = value
                d = f.create_dataset(key, data=data)
                part = data.dtype["real"] if data.dtype.names else data.dtype
                d.attrs["MATLAB_class"] = np.bytes_("single" if part == np.float32 else "double")
        with open(tmp, "r+b") as raw:
            raw.write(_userblock_header())
    return path




# ---------------------------------------------------------------------------------------------------
# Folders


def find_data_folder(root: str | os.PathLike) -> Path | None:
    """The folder holding FullSample / AccFactorRR under `root` (root itself, or root/MultiCoil/Cine/<Set>),
    or None when `root` is not in the CMRxRecon layout."""
    root = Path(root)
    candidates = [root] + [root / "MultiCoil" / "Cine" / s for s in SUBSETS] + [root / "Cine" / s for s in SUBSETS]
    for c in candidates:
        if c.is_dir() and any(p.is_dir() and (p.name == FULL_FOLDER or ACC_FOLDER.match(p.name))
                              for p in c.iterdir()):
            return c
    return None


def is_cmrxrecon_folder(root: str | os.PathLike) -> bool:
    return find_data_folder(root) is not None


@dataclass
class CineFile:
    """One view of one patient: where its k-space, acquired mask and reference are."""
    patient: str
    view: str
    kspace_path: Path          # FullSample file, or the AccFactor file when there is no FullSample
    kspace_key: str
    mask_path: Path | None     # AccFactorRR/<patient>/<view>_mask.mat
    mask_key: str | None
    acceleration: int | None   # RR of the acquired mask
    fully_sampled: bool
    shape: tuple[int, ...]     # h5py (frames, slices, coils, ky, kx)
    lines: np.ndarray | None   # acquired ky lines (ky,)

    @property
    def path(self) -> Path:  # what the HDF5 readers' FileInfo offers evaluation (file names, recon size)
        return Path(self.fname)

    @property
    def fname(self) -> str:
        tag = "" if self.acceleration is None else f"_acc{self.acceleration:02d}"
        return f"{self.patient}_{self.view}{tag}.h5"

    recon_size = None
    num_slices = property(lambda self: self.shape[1])


def _inspect(kspace_path: Path, key: str) -> tuple[int, ...]:
    with open_mat(kspace_path) as f:
        return _check_kspace(kspace_path, _dataset(kspace_path, f, key), key)


def _scan(path: Path, key: str) -> None:
    """NaN/Inf and all-zero slices, read one slice at a time."""
    with open_mat(path) as f:
        d = f[key]
        for s in range(d.shape[1]):
            k = _complex(d[:, s])
            if not np.isfinite(k).all():
                raise DataError(path, f"slice {s}: NaN/Inf value(s) in k-space", key=key)
            if not np.any(k):
                raise DataError(path, f"slice {s}: k-space is all zero", key=key)


def _patient_folders(folder: Path) -> list[Path]:
    """The patient folders in `folder`; a link whose target is gone (a split made by `split_training_set`
    whose TrainingSet moved) is an error naming the patient, not a patient silently left out."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_symlink() and not p.exists():
            raise DataError(p, f"patient {p.name}: dangling link to {os.readlink(p)} (the folder it points to is "
                            "gone: make the split again with `mrirecon cmrxrecon split`)")
        if p.is_dir():
            found.append(p)
    return found


def discover(root: str | os.PathLike, accelerations: Sequence[int] | None = None,
             views: Sequence[str] = VIEWS, scan_values: bool = False, references: bool = False) -> list[CineFile]:
    """Every (patient, view[, acceleration]) under a CMRxRecon folder, checked (keys, shapes, masks).

    accelerations: the AccFactor folders whose acquired masks to use (None: all present). With FullSample,
    one entry per acceleration that has the patient's mask, or one without a mask when none has; without
    FullSample, one per acceleration (undersampled k-space and its mask). references: every patient needs its
    FullSample file (training, validation): DataError naming the first patient without."""
    base = find_data_folder(root)
    if base is None:
        raise DataError(root, f"not a CMRxRecon folder: no {FULL_FOLDER} or AccFactorRR folder in it or in "
                        f"MultiCoil/Cine/TrainingSet below it")
    acc_dirs = {int(m.group(1)): p for p in sorted(base.iterdir()) if p.is_dir() and (m := ACC_FOLDER.match(p.name))}
    if accelerations is not None:
        acc_dirs = {r: p for r, p in acc_dirs.items() if r in set(int(a) for a in accelerations)}
    full_dir = base / FULL_FOLDER
    files: list[CineFile] = []
    patients = sorted({p.name for d in ([full_dir] if full_dir.is_dir() else []) + list(acc_dirs.values())
                       for p in _patient_folders(d)})
    for patient in patients:
        for view in views:
            full = full_dir / patient / f"{view}.mat"
            has_full = full.is_file()
            shape = _inspect(full, FULL_KEY) if has_full else None
            if has_full and scan_values:
                _scan(full, FULL_KEY)
            entries = []
            for r, d in acc_dirs.items():
                sub, mask_file = d / patient / f"{view}.mat", d / patient / f"{view}_mask.mat"
                if not (sub.is_file() or mask_file.is_file()):
                    continue
                if not mask_file.is_file():
                    raise DataError(mask_file, f"missing mask file for {sub} (key {mask_key(r)})")
                if not has_full:
                    shape_r = _inspect(sub, sub_key(r))
                    if scan_values:
                        _scan(sub, sub_key(r))
                else:
                    shape_r = shape
                lines = read_mask(mask_file, mask_key(r), shape_r[3], shape_r[4])
                if not lines[shape_r[3] // 2]:
                    raise DataError(mask_file, "mask does not sample the k-space centre ky line", key=mask_key(r))
                entries.append(CineFile(patient, view, full if has_full else sub, FULL_KEY if has_full else sub_key(r),
                                        mask_file, mask_key(r), r, has_full, shape_r, lines))
            if entries and not has_full and references:
                raise DataError(full, f"patient {patient}: no {FULL_FOLDER}/{patient}/{view}.mat, only undersampled "
                                f"data in {', '.join(acc_folder(e.acceleration) for e in entries)}; training and "
                                f"validation need the fully sampled reference (move {patient} to the test split, "
                                "or add its FullSample folder)", key=FULL_KEY)
            if has_full and not entries:
                entries.append(CineFile(patient, view, full, FULL_KEY, None, None, None, True, shape, None))
            files.extend(entries)
    if not files:
        raise DataError(base, f"no {' / '.join(v + '.mat' for v in views)} files in {FULL_FOLDER} or "
                        f"{', '.join(acc_folder(r) for r in acc_dirs) or 'AccFactorRR'} patient folders")
    return files


def read_slice(cf: CineFile, slice_num: int) -> np.ndarray:
    """k-space of one slice, (C, T, H, W) complex64 with H = kx (readout), W = ky (phase encode)."""
    with open_mat(cf.kspace_path) as f:
        k = _complex(f[cf.kspace_key][:, slice_num])  # (T, C, ky, kx)
    return np.ascontiguousarray(k.transpose(1, 0, 3, 2))


# ---------------------------------------------------------------------------------------------------
# Reader


class CmrxReconReader(Reader):
    """Slice-level reader of a CMRxRecon folder (one item = one slice of one view, all frames).

    The acquired masks used are those of the accelerations of a `cmrxrecon` mask function
    (`data.mask: {name: cmrxrecon, accelerations: [8]}`); with another mask (e.g. kyt) on FullSample
    data the masks are simulated by it, while undersampled-only data always uses its acquired masks.
    """

    views: Sequence[str] = VIEWS

    def __init__(self, root: str | os.PathLike, kind: Any, options: ReadOptions):
        super().__init__(root, kind, options)
        o = options
        if o.volume:
            raise ValueError("volume=True is only meaningful for knee3d")
        if o.require_maps:
            raise DataError(root, "CMRxRecon files carry no coil maps: set data.maps: online (ESPIRiT from the "
                            "fully sampled central ky band of each sample)", key="espirit_maps")
        mask_func = o.mask_func
        accelerations = mask_func.accelerations if isinstance(mask_func, CmrxReconMask) else None
        files = discover(root, accelerations, self.views, o.scan_values, o.references)
        if not isinstance(mask_func, CmrxReconMask):  # simulated masks on fully sampled data: no duplicates
            seen: set[tuple[str, str]] = set()
            kept = []
            for cf in files:
                if cf.fully_sampled and (cf.patient, cf.view) not in seen:
                    seen.add((cf.patient, cf.view))
                    kept.append(CineFile(cf.patient, cf.view, cf.kspace_path, cf.kspace_key, None, None, None,
                                         True, cf.shape, None))
                elif not cf.fully_sampled:
                    kept.append(cf)
            files = kept
        self.files = keep_fraction(files, o.sample_rate)
        self.items = [(i, s) for i, cf in enumerate(self.files) for s in range(cf.num_slices)]

    @classmethod
    def recognises(cls, root: Path, kind: Any) -> bool:
        return is_cmrxrecon_folder(root)

    def read(self, index: int) -> RawSlice:
        i, s = self.items[index]
        cf = self.files[i]
        mask = None if cf.lines is None else cf.lines.reshape(1, 1, 1, -1)
        # An acquired mask's nominal factor is its folder's RR (results are grouped by it); the mask's effective
        # factor is lower because of the central band.
        nominal = None if cf.acceleration is None else float(cf.acceleration)
        return RawSlice(read_slice(cf, s), None, mask, cf.fname, s, None, self.fft_ndim,
                        reference=cf.fully_sampled, nominal_acceleration=nominal)

    def item_shape(self, index: int) -> tuple:
        frames, _, coils, ky, kx = self.files[self.items[index][0]].shape
        return (coils, frames, kx, ky)


# ---------------------------------------------------------------------------------------------------
# Writing the layout (synthetic data, tests) and splitting a TrainingSet


def write_patient(base: str | os.PathLike, patient: str, kspace: np.ndarray, accelerations: Sequence[int] = (4, 8, 10),
                  view: str = "cine_sax", center_lines: int | None = None) -> list[Path]:
    """Write one patient in the challenge layout under `base` (a TrainingSet folder).

    kspace: (slices, frames, coils, H, W) fully sampled, H = readout (kx), W = ky, as the synthetic cine
    layout; written in h5py order (frames, slices, coils, ky, kx). Each AccFactorRR folder gets the
    undersampled k-space (zeros on unacquired lines, as distributed) and its mask (ky, kx)."""
    base = Path(base)
    k = np.ascontiguousarray(np.asarray(kspace, dtype=np.complex64).transpose(1, 0, 2, 4, 3))
    ky, kx = k.shape[-2:]
    written = []
    folder = base / FULL_FOLDER / patient
    folder.mkdir(parents=True, exist_ok=True)
    written.append(write_mat73(folder / f"{view}.mat", {FULL_KEY: k}))
    func = CmrxReconMask(accelerations, synthetic_centre_lines(ky) if center_lines is None else center_lines)
    for r in func.accelerations:
        lines = func.lines(ky, r)
        folder = base / acc_folder(r) / patient
        folder.mkdir(parents=True, exist_ok=True)
        written.append(write_mat73(folder / f"{view}.mat", {sub_key(r): k * lines[:, None].astype(np.float32)}))
        mask = np.repeat(lines[:, None], kx, axis=1).astype(np.float64)  # MATLAB's double 0/1, (ky, kx) in h5py
        written.append(write_mat73(folder / f"{view}_mask.mat", {mask_key(r): mask}))
    return written


def split_training_set(training_set: str | os.PathLike, out: str | os.PathLike,
                       fractions: tuple[float, float] = (0.15, 0.15)) -> dict[str, list[str]]:
    """Make OUT/{train,val,test}/<folder>/<patient> symbolic links into a CMRxRecon TrainingSet, patients
    split in sorted order (the last ones to val and test), so that `data.root: OUT` trains on it."""
    base = find_data_folder(training_set)
    if base is None:
        raise DataError(training_set, "not a CMRxRecon folder (no FullSample or AccFactorRR folder)")
    folders = [p for p in sorted(base.iterdir()) if p.is_dir() and (p.name == FULL_FOLDER or ACC_FOLDER.match(p.name))]
    patients = sorted({p.name for d in folders for p in d.iterdir() if p.is_dir()})
    n = len(patients)
    n_val, n_test = (round(f * n) for f in fractions)
    if n - n_val - n_test < 1:
        raise DataError(base, f"{n} patient(s): too few to split into train/val/test")
    splits = {"train": patients[: n - n_val - n_test], "val": patients[n - n_val - n_test: n - n_test],
              "test": patients[n - n_test:]}
    for split, names in splits.items():
        for d in folders:
            for name in names:
                if (d / name).is_dir():
                    link = Path(out) / split / d.name / name
                    link.parent.mkdir(parents=True, exist_ok=True)
                    if not link.exists():
                        link.symlink_to((d / name).resolve(), target_is_directory=True)
    return splits
