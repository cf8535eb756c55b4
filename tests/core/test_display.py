"""Per-image symmetric display scaling, PNG writing, grid layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.core.display import save_png, tile_grid, to_display


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
        [[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [3, 3, 0, 0, 0], [3, 3, 0, 0, 0]],
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


# --- gradient-family attribution displays ---------------------------------------------------

import matplotlib  # noqa: E402

from deconvnet.core.display import diverging_values, saliency_map, to_diverging, to_grayscale  # noqa: E402


def _numpy_grayscale(image: np.ndarray, percentile: float) -> np.ndarray:
    """Independent reference: [C, H, W] -> [H, W]."""
    magnitude = np.abs(image).sum(0)
    peak = np.percentile(magnitude, percentile)
    return np.clip(magnitude / peak, 0, 1)


def _numpy_diverging(image: np.ndarray, percentile: float) -> np.ndarray:
    signed = image.sum(0)
    peak = np.percentile(np.abs(signed), percentile)
    return np.clip(signed / peak, -1, 1)


def test_saliency_map_hand_values():
    r = torch.tensor(
        [[[1.0, -2.0], [0.0, 0.5]], [[-3.0, 1.0], [0.0, -0.25]], [[2.0, 0.0], [-1.0, 0.5]]]
    )  # [3, 2, 2]
    expected = torch.tensor([[3.0, 2.0], [1.0, 0.5]])
    assert torch.equal(saliency_map(r), expected)  # unbatched -> [H, W]
    batched = saliency_map(torch.stack([r, -2 * r]))
    assert batched.shape == (2, 2, 2)
    assert torch.equal(batched, torch.stack([expected, 2 * expected]))  # not normalised


def test_saliency_map_of_integer_input_is_float():
    shown = saliency_map(torch.tensor([[[-3, 2]], [[1, -1]]]))  # [2, 1, 2] int64
    assert shown.dtype == torch.float32 and torch.equal(shown, torch.tensor([[3.0, 2.0]]))


@pytest.mark.parametrize("percentile", [99.0, 90.0, 50.0, 37.3, 100.0])
def test_to_grayscale_matches_numpy_reference(percentile):
    r = torch.randn(3, 3, 7, 5, generator=torch.Generator().manual_seed(2))
    r[1] *= 100.0  # images are scaled on their own
    shown = to_grayscale(r, percentile)
    assert shown.shape == (3, 1, 7, 5) and shown.dtype == torch.float32
    for image, original in zip(shown, r):
        expected = _numpy_grayscale(original.numpy().astype(np.float64), percentile)
        np.testing.assert_allclose(image[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert shown.min() >= 0.0 and shown.max() <= 1.0


def test_to_grayscale_percentile_is_numpy_linear_interpolation():
    # 1 x 1 x 2 x 3 image whose |r| summed over channels is 0..5 (shuffled): the 90th percentile of
    # [0, 1, 2, 3, 4, 5] is 4.5 (position 0.9 * 5 = 4.5), so x -> min(x / 4.5, 1)
    r = torch.tensor([[[[3.0, -0.0, 5.0], [-1.0, 4.0, -2.0]]]])
    shown = to_grayscale(r, percentile=90)
    expected = torch.tensor([[[[3 / 4.5, 0.0, 1.0], [1 / 4.5, 4 / 4.5, 2 / 4.5]]]])
    torch.testing.assert_close(shown, expected, rtol=0, atol=1e-7)
    assert np.percentile([0, 1, 2, 3, 4, 5], 90) == 4.5


def test_to_grayscale_zero_image_and_percentile_100():
    generator = torch.Generator().manual_seed(3)
    r = torch.stack([torch.zeros(3, 4, 4), torch.randn(3, 4, 4, generator=generator)])
    shown = to_grayscale(r, percentile=100)
    assert torch.equal(shown[0], torch.zeros(1, 4, 4))
    assert not torch.isnan(shown).any()
    magnitude = r[1].abs().sum(0)
    assert shown[1, 0].flatten()[magnitude.argmax()].item() == 1.0
    torch.testing.assert_close(shown[1, 0], magnitude / magnitude.max())  # nothing clipped


def test_to_grayscale_mostly_zero_map_saturates_instead_of_nan():
    r = torch.zeros(1, 3, 4, 4)
    r[0, 0, 1, 2] = -0.5  # 1 non-zero pixel of 16: the 50th percentile is 0
    shown = to_grayscale(r, percentile=50)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1, 2] = 1.0
    assert torch.equal(shown, expected)


def test_to_grayscale_unbatched_shape():
    r = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(4))
    shown = to_grayscale(r)
    assert shown.shape == (1, 6, 4)
    assert torch.equal(shown, to_grayscale(r.unsqueeze(0))[0])


def test_diverging_values_keep_sign_and_clip():
    r = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(5))
    values = diverging_values(r, percentile=80)
    signed = r.sum(1)
    assert values.shape == (2, 8, 6) and values.dtype == torch.float32
    assert values.min() >= -1.0 and values.max() <= 1.0
    assert torch.equal(torch.sign(values), torch.sign(signed))
    assert (values.abs() == 1.0).any() and (values == -1.0).any()  # both ends clipped at p80
    for image, original in zip(values, r):
        expected = _numpy_diverging(original.numpy().astype(np.float64), 80)
        np.testing.assert_allclose(image.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_diverging_values_hand_case():
    # signed channel sum [[2, -4], [1, 0]]; |.| = [0, 1, 2, 4]: 100th pct 4, 50th pct 1.5
    r = torch.tensor([[[[1.0, -4.0], [0.5, 1.0]], [[1.0, 0.0], [0.5, -1.0]]]])  # [1, 2, 2, 2]
    assert torch.equal(diverging_values(r, 100), torch.tensor([[[0.5, -1.0], [0.25, 0.0]]]))
    torch.testing.assert_close(
        diverging_values(r, 50), torch.tensor([[[1.0, -1.0], [1 / 1.5, 0.0]]]), rtol=0, atol=1e-7
    )
    assert diverging_values(r[0], 100).shape == (2, 2)
    assert torch.equal(diverging_values(torch.zeros(3, 2, 2)), torch.zeros(2, 2))


def test_to_diverging_colours_zero_and_ends():
    cmap = matplotlib.colormaps["RdBu_r"]
    # signed sums [[-2, 0], [2, 1]] over one channel; percentile 100 -> values [[-1, 0], [1, 0.5]]
    r = torch.tensor([[[-2.0, 0.0], [2.0, 1.0]]])  # [1, 2, 2] unbatched
    rgb = to_diverging(r, percentile=100)
    assert rgb.shape == (3, 2, 2) and rgb.dtype == torch.float32
    colour = lambda t: torch.tensor(cmap(t)[:3], dtype=torch.float32)  # noqa: E731
    torch.testing.assert_close(rgb[:, 0, 0], colour(0.0))  # -1: blue end
    torch.testing.assert_close(rgb[:, 0, 1], colour(0.5))  # 0: neutral middle
    torch.testing.assert_close(rgb[:, 1, 0], colour(1.0))  # +1: red end
    torch.testing.assert_close(rgb[:, 1, 1], colour(0.75))
    assert rgb[2, 0, 0] > rgb[0, 0, 0] and rgb[0, 1, 0] > rgb[2, 1, 0]  # blue < 0 < red
    assert rgb[:, 0, 1].min() > 0.9  # the middle is near-white


def test_to_diverging_matches_matplotlib_on_random_values():
    cmap = matplotlib.colormaps["RdBu_r"]
    r = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(6))
    rgb = to_diverging(r, percentile=95)
    assert rgb.shape == (2, 3, 9, 7)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    values = diverging_values(r, percentile=95).numpy()
    expected = cmap(values * 0.5 + 0.5)[..., :3].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(rgb.numpy(), expected, rtol=0, atol=1e-6)
    zero = to_diverging(torch.zeros(1, 3, 2, 2))
    torch.testing.assert_close(zero[0, :, 0, 0], torch.tensor(cmap(0.5)[:3], dtype=torch.float32))


def test_attribution_displays_keep_float64_and_detach():
    r = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    for shown in (saliency_map(r), to_grayscale(r), diverging_values(r), to_diverging(r)):
        assert shown.dtype == torch.float64 and not shown.requires_grad


@pytest.mark.parametrize("function", [to_grayscale, diverging_values, to_diverging])
@pytest.mark.parametrize("percentile", [0, 0.0, 101, -5.0, float("nan"), float("inf"), "99", None, True])
def test_bad_percentile_is_rejected(function, percentile):
    with pytest.raises(ValueError, match=r"percentile: expected a real number in \(0, 100\]"):
        function(torch.ones(1, 3, 2, 2), percentile)


@pytest.mark.parametrize("function", [saliency_map, to_grayscale, diverging_values, to_diverging])
def test_attribution_displays_reject_bad_images(function):
    with pytest.raises(ValueError, match=r"r: expected shape \[B, C, H, W\] or \[C, H, W\], got \[4, 4\]"):
        function(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="r: contains NaN or inf"):
        function(torch.tensor([[[0.0, float("nan")]]]))
    with pytest.raises(ValueError, match="r: contains NaN or inf"):
        function(torch.tensor([[[[float("-inf")]]]]))
    with pytest.raises(ValueError, match="r: empty tensor"):
        function(torch.zeros(1, 3, 0, 2))
    with pytest.raises(ValueError, match="r: expected a torch.Tensor"):
        function(np.zeros((3, 2, 2)))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 101, 1000])
def test_percentile_helper_matches_numpy_percentile(n):
    from deconvnet.core.display import _percentile_per_image

    values = torch.randn(3, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    for q in (0.1, 1.0, 25.0, 50.0, 62.5, 99.0, 99.9, 100.0):
        expected = np.percentile(values.numpy(), q, axis=1)
        np.testing.assert_allclose(_percentile_per_image(values, q).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_percentile_accepts_ints_and_numpy_scalars():
    r = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(7))
    reference = to_grayscale(r, 95.0)
    assert torch.equal(to_grayscale(r, 95), reference)
    assert torch.equal(to_grayscale(r, np.float64(95.0)), reference)
    assert torch.equal(to_grayscale(r, np.int64(95)), reference)
