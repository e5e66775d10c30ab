"""ISMRMRD headers: what we write is what fastMRI reads (sizes, phase-encode padding); bad headers fail clearly."""
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from mrirecon.data.errors import DataError
from mrirecon.data.ismrmrd import NAMESPACE, HeaderInfo, make_header, parse_header

NS = {"i": NAMESPACE}


def fastmri_like_header() -> bytes:
    # A zero-padded knee acquisition: 372 encoded columns, 356 acquired (0..355), centre line 180.
    return make_header((640, 372, 1), (320, 320, 1), kspace_center=180, kspace_max=355, coils=15, slices=35)


def test_roundtrip_gives_sizes_and_fastmri_padding():
    info = parse_header(fastmri_like_header())
    # padding_left = 372 // 2 - 180 = 6, padding_right = 6 + 355 + 1 = 362
    assert info == HeaderInfo(encoded_size=(640, 372, 1), recon_size=(320, 320, 1), padding_left=6, padding_right=362)


def test_unpadded_header_covers_all_columns():
    info = parse_header(make_header((128, 64, 1), (64, 64, 1), kspace_center=32, kspace_max=63))
    assert (info.padding_left, info.padding_right) == (0, 64)


def test_parse_accepts_str():
    assert parse_header(fastmri_like_header().decode()).recon_size == (320, 320, 1)


def test_header_is_namespaced_ismrmrd_xml_with_oversampled_encoded_fov():
    root = ET.fromstring(fastmri_like_header())
    assert root.tag == f"{{{NAMESPACE}}}ismrmrdHeader"
    enc_fov = root.find("i:encoding/i:encodedSpace/i:fieldOfView_mm", NS)
    rec_fov = root.find("i:encoding/i:reconSpace/i:fieldOfView_mm", NS)
    # Same pixel size in both spaces: the 2x oversampled readout has twice the recon FOV.
    assert float(enc_fov.find("i:x", NS).text) == 2 * float(rec_fov.find("i:x", NS).text) == 280.0
    assert root.find("i:acquisitionSystemInformation/i:receiverChannels", NS).text == "15"
    assert root.find("i:encoding/i:encodingLimits/i:kspace_encoding_step_1/i:minimum", NS).text == "0"


def test_fastmri_slicedataset_reads_the_same_metadata(tmp_path):
    from fastmri.data.mri_data import SliceDataset

    header = make_header((16, 12, 1), (8, 8, 1), kspace_center=5, kspace_max=9)
    with h5py.File(tmp_path / "vol.h5", "w") as hf:
        hf["kspace"] = np.zeros((2, 3, 16, 12), np.complex64)
        hf["reconstruction_rss"] = np.zeros((2, 8, 8), np.float32)
        hf["ismrmrd_header"] = np.bytes_(header)
    ds = SliceDataset(root=tmp_path, challenge="multicoil", transform=None)
    meta = ds.raw_samples[0].metadata
    ours = parse_header(header)
    assert (meta["padding_left"], meta["padding_right"]) == (ours.padding_left, ours.padding_right) == (1, 11)
    assert tuple(meta["recon_size"]) == ours.recon_size == (8, 8, 1)
    assert tuple(meta["encoding_size"]) == ours.encoded_size == (16, 12, 1)


def test_malformed_xml_raises_dataerror_naming_file_and_key():
    with pytest.raises(DataError, match="malformed") as err:
        parse_header(b"<ismrmrdHeader><encoding>", path="/data/file_1.h5")
    assert err.value.key == "ismrmrd_header"
    assert "/data/file_1.h5" in str(err.value) and "[ismrmrd_header]" in str(err.value)


def test_missing_element_is_named():
    xml = fastmri_like_header().replace(b"<center>180</center>", b"")
    with pytest.raises(DataError, match="encoding/encodingLimits/kspace_encoding_step_1/center") as err:
        parse_header(xml, path="f.h5")
    assert err.value.key == "ismrmrd_header"


def test_non_integer_size_is_named():
    xml = fastmri_like_header().replace(b"<x>640</x>", b"<x>six-forty</x>")
    with pytest.raises(DataError, match="encoding/encodedSpace/matrixSize/x.*six-forty"):
        parse_header(xml)


def test_wrong_root_element_is_rejected():
    with pytest.raises(DataError, match="ismrmrdHeader"):
        parse_header(b"<header><encoding/></header>")


def test_make_header_rejects_center_beyond_maximum():
    with pytest.raises(ValueError, match="kspace_center"):
        make_header((32, 16, 1), (16, 16, 1), kspace_center=20, kspace_max=15)
