"""Synthetic cine written in the CMRxRecon challenge layout (MATLAB v7.3 files, read by
`mrirecon.data.readers.cmrxrecon`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..data.layouts import KSPACE, SPLITS
from ..data.readers.cmrxrecon import write_patient
from .generator import _config, make_volume, split_counts


def generate_cmrxrecon(out: str | os.PathLike, volumes: int | None = None, seed: int = 0, *,
                       overwrite: bool = False, accelerations: Sequence[int] = (4, 8, 10),
                       **settings) -> dict[str, list[Path]]:
    """Synthetic cine (`generator`, kind cine: the same volumes for the same seed) written in
    the challenge layout: OUT/{train,val,test}/MultiCoil/Cine/TrainingSet/{FullSample,AccFactorRR}/Pnnn/
    cine_sax.mat (+ cine_sax_mask.mat), patients numbered across splits. Returns the FullSample files."""
    cfg = _config("cine", volumes=volumes, **settings)
    n = cfg.pop("volumes")
    out = Path(out)
    for split in SPLITS:
        folder = out / split
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise FileExistsError(f"output folder {folder} is not empty; pass --overwrite (overwrite=True) "
                                  "to replace its .mat files")
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    splits = [split for split, count in zip(SPLITS, split_counts(n)) for _ in range(count)]
    for index, split in enumerate(splits):
        data, _ = make_volume("cine", index, seed, **cfg)
        base = out / split / "MultiCoil" / "Cine" / "TrainingSet"
        files[split].append(write_patient(base, f"P{index + 1:03d}", data[KSPACE], accelerations)[0])
    return files
