"""Per-image symmetric display scaling, PNG writing, grid layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.display import save_png, tile_grid, to_display


def test_to_display_hand_values():
    # max|r| = 4 over all channels and pixels: 0.5 + 0.5 * r / 4
    r = torch.tensor([[[[2.0, -4.0]], [[1.0, 0.0]], [[0.0, -1.0]]]])  # [1, 3, 1, 2]
    expected = torch.tensor([[[[0.75, 0.0]], [[0.625, 0.5]], [[0.5, 0.375]]]])
    assert torch.equal(to_display(r), expected)


def test_zero_is_mid_grey_and_extremes_reach_0_or_1():
    r = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    r[:, :, 2, 2] = 0.0
    shown = to_display(r)
    assert torch.equal(shown[:, :, 2, 2], torch.full((2, 3), 0.5))
    for image, original in zip(shown, r):
        peak = original.abs().argmax()
        expected = 1.0 if original.flatten()[peak] > 0 else 0.0
        assert shown.dtype == torch.float32 and image.flatten()[peak].item() == expected
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_all_positive_image_is_not_min_max_stretched():
    r = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.equal(to_display(r)[0, 0, 0], torch.tensor([0.75, 1.0]))


def test_images_are_scaled_independently():
    generator = torch.Generator().manual_seed(1)
    small, large = torch.randn(2, 3, 4, 4, generator=generator)
    base = to_display(torch.stack([small, large]))
    scaled = to_display(torch.stack([small, 10 * large]))
    assert torch.equal(scaled[0], base[0])
    torch.testing.assert_close(scaled[1], base[1], rtol=0, atol=1e-6)
    # a tiny image beside a huge one still uses its full range
    mixed = to_display(torch.stack([1e-3 * small, 1e3 * large]))
    assert mixed[0].min().item() == 0.0 or mixed[0].max().item() == 1.0


def test_all_zero_image_is_uniform_grey_without_nan():
    r = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    shown = to_display(r)
    assert torch.equal(shown[0], torch.full((3, 4, 4), 0.5))
    assert torch.equal(shown[1], torch.ones(3, 4, 4))


def test_single_image_keeps_its_shape():
    r = torch.tensor([[[-3.0, 1.5]], [[0.0, 0.0]], [[0.0, 0.0]]])  # [3, 1, 2]
    shown = to_display(r)
    assert shown.shape == (3, 1, 2)
    assert torch.equal(shown[0, 0], torch.tensor([0.0, 0.75]))


def test_to_display_rejects_bad_input():
    with pytest.raises(ValueError, match=r"shape \[B, C, H, W\] or \[C, H, W\], got \[4, 4\]"):
        to_display(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        to_display(torch.tensor([[[float("nan")]]]))
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        to_display(np.zeros((3, 2, 2)))


def test_save_png_writes_8_bit_pixels_and_creates_directories(tmp_path):
    image = torch.tensor([0.0, 0.5, 1.0, 0.2]).view(1, 1, 4).expand(3, 2, 4).contiguous()
    image[1] = 1 - image[1]
    path = save_png(image, tmp_path / "a" / "b" / "tile.png")
    assert path == tmp_path / "a" / "b" / "tile.png"
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (2, 4, 3)
    assert pixels[0, :, 0].tolist() == [0, 128, 255, 51]  # round(255 * v)
    assert pixels[0, :, 1].tolist() == [255, 128, 0, 204]
    save_png(image.unsqueeze(0), tmp_path / "batched.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "batched.png")), pixels)


def test_save_png_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        save_png(torch.full((3, 2, 2), 2.0), tmp_path / "x.png")
    with pytest.raises(ValueError, match="ending in .png"):
        save_png(torch.zeros(3, 2, 2), tmp_path / "x.jpg")
    assert not (tmp_path / "x.png").exists()


def test_tile_grid_hand_layout():
    tiles = torch.stack([torch.full((1, 2, 2), float(v)) for v in (1, 2, 3)])  # [3, 1, 2, 2]
    grid = tile_grid(tiles, rows=2, cols=2, pad=1, fill=0.0)
    expected = torch.tensor(
        [
            [1, 1, 0, 2, 2],
            [1, 1, 0, 2, 2],
            [0, 0, 0, 0, 0],
            [3, 3, 0, 0, 0],
            [3, 3, 0, 0, 0],
        ],
        dtype=torch.float32,
    ).unsqueeze(0)
    assert torch.equal(grid, expected)


def test_tile_grid_per_channel_fill_and_no_pad():
    tiles = torch.zeros(1, 3, 2, 2)
    grid = tile_grid(tiles, rows=1, cols=2, pad=0, fill=(0.1, 0.2, 0.3))
    assert grid.shape == (3, 2, 4)
    assert torch.equal(grid[:, :, :2], torch.zeros(3, 2, 2))
    assert torch.equal(grid[:, 0, 3], torch.tensor([0.1, 0.2, 0.3]))


def test_tile_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="5 tiles do not fit a 2 x 2 grid"):
        tile_grid(torch.zeros(5, 3, 2, 2), 2, 2)
    with pytest.raises(ValueError, match="rows: expected an int >= 1, got 0"):
        tile_grid(torch.zeros(1, 3, 2, 2), 0, 2)
    with pytest.raises(ValueError, match="pad: expected an int >= 0, got -1"):
        tile_grid(torch.zeros(1, 3, 2, 2), 1, 1, pad=-1)
    with pytest.raises(ValueError, match=r"tiles: expected a tensor \[N, C, h, w\], got \[3, 2, 2\]"):
        tile_grid(torch.zeros(3, 2, 2), 1, 1)
    with pytest.raises(ValueError, match="fill: expected one value or 3"):
        tile_grid(torch.zeros(1, 3, 2, 2), 1, 1, fill=(0.0, 1.0))
