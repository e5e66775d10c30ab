"""The ISMRMRD XML header carried by fastMRI files: writing one, and reading the sizes the datasets need.

fastMRI stores the raw-data header of the ISMRMRD format (https://ismrmrd.github.io) as the dataset
`ismrmrd_header`. Readers use three parts of it:

- `encoding/encodedSpace/matrixSize` (x = readout incl. 2x oversampling, y = phase-encode columns, z),
- `encoding/reconSpace/matrixSize`, the size of `reconstruction_rss`,
- `encoding/encodingLimits/kspace_encoding_step_1/{center,maximum}`: the phase-encode lines actually
  acquired, which gives the zero-padded columns at each side of k-space.

The padding follows fastMRI's `SliceDataset`: columns [padding_left, padding_right) hold data.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .errors import DataError
from .layouts import HEADER

NAMESPACE = "http://www.ismrm.org/ISMRMRD"


@dataclass(frozen=True)
class HeaderInfo:
    """Sizes read from an ISMRMRD header; columns [padding_left, padding_right) of k-space hold data."""

    encoded_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int


def _sub(parent: ET.Element, name: str, text: object | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NAMESPACE}}}{name}")
    if text is not None:
        el.text = str(text)
    return el


def _space(parent: ET.Element, name: str, size: tuple[int, int, int], fov: tuple[float, float, float]) -> None:
    space = _sub(parent, name)
    matrix = _sub(space, "matrixSize")
    fov_el = _sub(space, "fieldOfView_mm")
    for axis, n, f in zip("xyz", size, fov):
        _sub(matrix, axis, int(n))
        _sub(fov_el, axis, f"{float(f):g}")


def _limit(parent: ET.Element, name: str, minimum: int, maximum: int, center: int) -> None:
    lim = _sub(parent, name)
    _sub(lim, "minimum", int(minimum))
    _sub(lim, "maximum", int(maximum))
    _sub(lim, "center", int(center))


def make_header(
    encoded_size: tuple[int, int, int],
    recon_size: tuple[int, int, int],
    kspace_center: int,
    kspace_max: int,
    fov_mm: tuple[float, float, float] = (140.0, 140.0, 3.0),
    *,
    encoded_fov_mm: tuple[float, float, float] | None = None,
    coils: int | None = None,
    slices: int | None = None,
    h1_frequency_hz: int = 123_200_000,
) -> bytes:
    """An ISMRMRD XML header (UTF-8 bytes) for a Cartesian 2D multi-slice acquisition.

    `fov_mm` is the reconSpace field of view; the encodedSpace one defaults to the same pixel size
    (fov scaled by encoded/recon size, so a 2x oversampled readout has twice the FOV). `kspace_center`
    and `kspace_max` are encodingLimits/kspace_encoding_step_1 (minimum 0). `coils` and `slices`, when
    given, fill receiverChannels and the slice limits as scanners do; the default H1 frequency is a 2.89 T
    scanner's (the schema requires experimentalConditions).
    """
    if len(encoded_size) != 3 or len(recon_size) != 3:
        raise ValueError(f"encoded_size and recon_size need 3 entries (x, y, z), got {encoded_size}, {recon_size}")
    if not 0 <= kspace_center <= kspace_max:
        raise ValueError(f"need 0 <= kspace_center <= kspace_max, got center={kspace_center}, max={kspace_max}")
    if encoded_fov_mm is None:
        encoded_fov_mm = tuple(f * e / r for f, e, r in zip(fov_mm, encoded_size, recon_size))

    ET.register_namespace("", NAMESPACE)
    root = ET.Element(f"{{{NAMESPACE}}}ismrmrdHeader")
    if coils is not None:
        _sub(_sub(root, "acquisitionSystemInformation"), "receiverChannels", int(coils))
    _sub(_sub(root, "experimentalConditions"), "H1resonanceFrequency_Hz", int(h1_frequency_hz))
    encoding = _sub(root, "encoding")
    _space(encoding, "encodedSpace", encoded_size, encoded_fov_mm)
    _space(encoding, "reconSpace", recon_size, fov_mm)
    limits = _sub(encoding, "encodingLimits")
    _limit(limits, "kspace_encoding_step_1", 0, kspace_max, kspace_center)
    _limit(limits, "kspace_encoding_step_2", 0, 0, 0)
    if slices is not None:
        _limit(limits, "slice", 0, max(int(slices) - 1, 0), int(slices) // 2)
    _sub(encoding, "trajectory", "cartesian")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _find(root: ET.Element, parts: tuple[str, ...], path: str | os.PathLike | None) -> int:
    el = root
    for part in parts:
        el = el.find(f"{{{NAMESPACE}}}{part}")
        if el is None:
            raise DataError(path, f"ISMRMRD header has no element {'/'.join(parts)}", key=HEADER)
    try:
        return int((el.text or "").strip())
    except ValueError:
        raise DataError(path, f"ISMRMRD header element {'/'.join(parts)} is not an integer: {el.text!r}",
                        key=HEADER) from None


def parse_header(xml: bytes | str, path: str | os.PathLike | None = None) -> HeaderInfo:
    """Matrix sizes and phase-encode padding from an ISMRMRD header (fastMRI `SliceDataset` semantics).

    padding_left = encoded_y // 2 - center, padding_right = padding_left + maximum + 1 (not checked against
    the k-space width here: fastMRI does not either, the dataset that knows the width does).
    Raises DataError(path, ..., key="ismrmrd_header") on malformed XML or missing elements.
    """
    try:
        root = ET.fromstring(xml)
    except (ET.ParseError, TypeError, ValueError) as e:
        raise DataError(path, f"malformed ISMRMRD header XML: {e}", key=HEADER) from None
    if root.tag != f"{{{NAMESPACE}}}ismrmrdHeader":
        raise DataError(path, f"root element is {root.tag!r}, expected ismrmrdHeader in namespace {NAMESPACE}",
                        key=HEADER)

    def size(space: str) -> tuple[int, int, int]:
        x, y, z = (_find(root, ("encoding", space, "matrixSize", a), path) for a in "xyz")
        return x, y, z

    encoded, recon = size("encodedSpace"), size("reconSpace")
    lim = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    center = _find(root, lim + ("center",), path)
    maximum = _find(root, lim + ("maximum",), path)
    left = encoded[1] // 2 - center
    right = left + maximum + 1
    if maximum < 0 or center < 0:
        raise DataError(path, f"encodingLimits/kspace_encoding_step_1 has negative center={center} or "
                              f"maximum={maximum}", key=HEADER)
    return HeaderInfo(encoded_size=encoded, recon_size=recon, padding_left=left, padding_right=right)
