"""Figures are written atomically as PNGs whose pixel size follows from the panel layout."""
import numpy as np
import pytest
from PIL import Image

from mrirecon.evaluation import figures
from mrirecon.evaluation.figures import save_cine_figure, save_comparison_grid

PANEL = int(figures.PANEL_INCHES * figures.DPI)
TITLE = int(figures.TITLE_INCHES * figures.DPI)


def volumes(rng, shape):
    t = rng.random(shape)
    return t, t + 0.3 * rng.random(shape), t + 0.05 * rng.random(shape)


def png_size(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_comparison_grid_is_a_png_of_4_columns_and_one_row_per_slice(tmp_path, rng):
    path = save_comparison_grid(tmp_path / "grid.png", *volumes(rng, (3, 24, 16)), slices=(0, 2))
    assert path == tmp_path / "grid.png"
    assert png_size(path) == (4 * PANEL, 2 * (PANEL + TITLE))
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temp file left behind


def test_comparison_grid_applies_the_evaluation_crop_and_accepts_complex(tmp_path, rng):
    # target (24, 16) is cropped to (16, 16); larger complex predictions are cropped to the same.
    t = rng.random((2, 24, 16))
    z = rng.random((2, 30, 20)) * np.exp(1j * rng.random((2, 30, 20)))
    r = rng.random((2, 30, 20)).astype(np.complex64)
    path = save_comparison_grid(tmp_path / "grid.png", t, z, r)  # default: the middle slice
    assert png_size(path) == (4 * PANEL, PANEL + TITLE)


def test_comparison_grid_without_crop_keeps_the_image_aspect(tmp_path, rng):
    path = save_comparison_grid(tmp_path / "grid.png", *volumes(rng, (1, 24, 16)), crop=False)
    assert png_size(path) == (4 * PANEL, PANEL * 24 // 16 + TITLE)


def test_comparison_grid_rejects_a_slice_outside_the_volume(tmp_path, rng):
    with pytest.raises(ValueError, match=r"slices \[5\]"):
        save_comparison_grid(tmp_path / "grid.png", *volumes(rng, (3, 16, 16)), slices=(0, 5))
    assert not list(tmp_path.iterdir())


def test_cine_figure_has_three_rows_and_frames_plus_profile_columns(tmp_path, rng):
    path = save_cine_figure(tmp_path / "cine.png", *volumes(rng, (6, 16, 20)), frames=(0, 3))
    assert png_size(path) == (3 * PANEL, 3 * (PANEL * 16 // 20 + TITLE))


def test_cine_figure_rejects_profile_outside_the_image(tmp_path, rng):
    with pytest.raises(ValueError, match="profile_col 20"):
        save_cine_figure(tmp_path / "cine.png", *volumes(rng, (6, 16, 20)), profile_col=20)


def test_existing_figure_is_replaced_not_appended(tmp_path, rng):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old")
    save_comparison_grid(path, *volumes(rng, (1, 16, 16)))
    assert png_size(path) == (4 * PANEL, PANEL + TITLE)
