"""Readers, one per on-disk layout; a data kind (`kinds.py`) names the reader of its files.

    base.py       RawSlice (what a reader hands over per item), ReadOptions, the Reader interface
    hdf5.py       the HDF5 file checks and reader shared by the three HDF5 layouts
    fastmri.py    fastMRI multi-coil files (knee2d, brain2d)
    mridata.py    mridata-style 3D files (knee3d: ky-kz slices or whole volumes)
    cine.py       cine: the synthetic HDF5 layout, or a CMRxRecon folder (chosen by `open_cine`)
    cmrxrecon.py  the CMRxRecon challenge's MATLAB v7.3 folders (reading, writing, splitting)
"""
