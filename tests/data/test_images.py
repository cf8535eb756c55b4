"""Image reading, RGB conversion, eval preprocessing and its inverse, bundled samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image

from deconvnet.core.display import to_pil
from deconvnet.data.images import denormalize, load_image, open_image, preprocess
from deconvnet.data.models import Preprocessing, preprocessing
from deconvnet.data.samples import pil_from_sample, sample_names, to_rgb

PREP = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MEAN = torch.tensor(PREP.mean).view(3, 1, 1)
STD = torch.tensor(PREP.std).view(3, 1, 1)


def normalised(rgb: tuple[int, int, int]) -> torch.Tensor:
    """Hand reference: (v / 255 - mean) / std per channel, as [3, 1, 1]."""
    return (torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255 - MEAN) / STD


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def palette_image() -> Image.Image:
    image = Image.new("P", (300, 280), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    return image


# (builder of a constant image of size 300 x 280 in some mode, the RGB it must become)
CONSTANT_IMAGES = {
    "L": (lambda: Image.new("L", (300, 280), 100), (100, 100, 100)),
    "1": (lambda: Image.new("1", (300, 280), 1), (255, 255, 255)),
    "LA opaque": (lambda: Image.new("LA", (300, 280), (50, 255)), (50, 50, 50)),
    "LA transparent": (lambda: Image.new("LA", (300, 280), (50, 0)), (255, 255, 255)),
    "P": (palette_image, (10, 20, 30)),
    "RGBA opaque": (lambda: Image.new("RGBA", (300, 280), (200, 40, 7, 255)), (200, 40, 7)),
    "RGBA transparent": (lambda: Image.new("RGBA", (300, 280), (200, 40, 7, 0)), (255, 255, 255)),
    "CMYK white": (lambda: Image.new("CMYK", (300, 280), (0, 0, 0, 0)), (255, 255, 255)),
    "CMYK red": (lambda: Image.new("CMYK", (300, 280), (0, 255, 255, 0)), (255, 0, 0)),
    "I;16": (lambda: Image.fromarray(np.full((280, 300), 128 * 257, np.uint16)), (128, 128, 128)),
    "I": (lambda: Image.fromarray(np.full((280, 300), 65535, np.int32)), (255, 255, 255)),
    "F": (lambda: Image.fromarray(np.full((280, 300), 0.2, np.float32)), (51, 51, 51)),
}


@pytest.mark.parametrize("case", list(CONSTANT_IMAGES))
def test_every_mode_becomes_rgb_and_is_normalised_by_hand(case):
    build, rgb = CONSTANT_IMAGES[case]
    image = build()
    x = load_image(image, "alexnet")
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    expected = normalised(rgb).expand(3, 224, 224)
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)


def test_preprocess_equals_torchvisions_own_eval_transform():
    image = noise_image(301, 257, seed=1)
    ours = preprocess(image, "vgg16")
    theirs = tvm.VGG16_Weights.IMAGENET1K_V1.transforms()(image)
    assert torch.equal(ours, theirs)


def test_center_crop_geometry_by_hand():
    # shorter side already 256, so the resize is the identity; the 224 crop of a 512 x 256 image
    # starts at left (512 - 224) / 2 = 144, top (256 - 224) / 2 = 16
    image = noise_image(512, 256, seed=2)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    expected = (pixels[:, 16:240, 144:368] / 255 - MEAN) / STD
    torch.testing.assert_close(preprocess(image, PREP), expected, rtol=0, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels).save(path, exif=exif)

    upright = open_image(path)
    assert upright.size == (40, 60)  # (width, height) swapped
    assert np.array_equal(np.asarray(upright), np.rot90(pixels, k=-1))
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(pixels, k=-1)))
    assert torch.equal(load_image(path, PREP)[0], preprocess(rotated, PREP))


def test_load_image_accepts_a_model_a_name_a_weights_enum_or_a_preprocessing(tmp_path):
    path = tmp_path / "noise.png"
    noise_image(300, 260, seed=4).save(path)
    with torch.device("meta"):
        model = tvm.alexnet(weights=None)
    by_model, by_name, by_enum, by_prep = (
        load_image(str(path), w) for w in (model, "alexnet", tvm.AlexNet_Weights.IMAGENET1K_V1, PREP)
    )
    assert torch.equal(by_model, by_name) and torch.equal(by_name, by_prep)
    assert torch.equal(by_enum, by_prep)
    with pytest.raises(
        ValueError,
        match="model_or_weights: expected a model, a model name, a "
        "torchvision weights enum or a Preprocessing, got int",
    ):
        load_image(str(path), 3)
    assert load_image(path, PREP, device="cpu").device == torch.device("cpu")


def test_denormalize_inverts_normalisation_and_clamps():
    image = noise_image(512, 256, seed=5)
    x = preprocess(image, PREP)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(denormalize(x, PREP), pixels[:, 16:240, 144:368], rtol=0, atol=1e-6)
    extremes = torch.stack([x, torch.full_like(x, 100.0), torch.full_like(x, -100.0)])
    batch = denormalize(extremes, "vgg16")
    assert batch.shape == (3, 3, 224, 224)
    assert torch.equal(batch[1], torch.ones(3, 224, 224))
    assert torch.equal(batch[2], torch.zeros(3, 224, 224))


def test_to_pil_round_trips_8_bit_pixels():
    image = noise_image(512, 256, seed=6)
    back = to_pil(denormalize(preprocess(image, PREP), PREP).unsqueeze(0))
    assert back.mode == "RGB" and back.size == (224, 224)
    assert np.array_equal(np.asarray(back), np.asarray(image)[16:240, 144:368])


def test_to_pil_rejects_values_outside_0_1_and_batches():
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\].*got range \[-0.5, 0.5\]"):
        to_pil(torch.linspace(-0.5, 0.5, 12).view(3, 2, 2))
    with pytest.raises(ValueError, match="single image"):
        to_pil(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"shape \[3, H, W\] or \[B, 3, H, W\], got \[4, 4\]"):
        to_pil(torch.zeros(4, 4))


# ------------------------------------------------------------------------------------------ samples


def test_sample_names_include_the_usual_photographs():
    names = sample_names()
    assert names == sorted(names)
    assert {"astronaut", "cat", "coffee", "rocket", "camera"} <= set(names)


def test_every_sample_loads_offline_as_rgb():
    for name in sample_names():
        image = pil_from_sample(name)
        assert image.mode == "RGB" and min(image.size) >= 100, name


def test_samples_have_the_skimage_pixels():
    import skimage.data

    assert np.array_equal(np.asarray(pil_from_sample("cat")), skimage.data.chelsea())
    camera = np.asarray(pil_from_sample("camera"))  # greyscale -> three equal channels
    assert np.array_equal(camera[..., 0], skimage.data.camera())
    assert np.array_equal(camera[..., 1], camera[..., 0])
    assert np.array_equal(camera[..., 2], camera[..., 0])
    horse = np.asarray(pil_from_sample("horse"))  # binary -> 0 / 255
    assert set(np.unique(horse)) == {0, 255}


def test_sample_name_loads_through_load_image():
    x = load_image("cat", "vgg16")
    assert torch.equal(x[0], preprocess(pil_from_sample("cat"), preprocessing("vgg16")))


def test_an_existing_file_wins_over_a_sample_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (300, 300), (9, 8, 7)).save("cat", format="PNG")
    torch.testing.assert_close(
        load_image("cat", PREP)[0], normalised((9, 8, 7)).expand(3, 224, 224), rtol=0, atol=1e-6
    )


# ------------------------------------------------------------------------------------------- errors


def test_missing_file_names_the_path_and_the_samples(tmp_path):
    path = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError) as error:
        load_image(str(path), PREP)
    message = str(error.value)
    assert str(path) in message and "astronaut" in message and "cat" in message


def test_unknown_plain_name_is_file_not_found():
    with pytest.raises(FileNotFoundError, match="kitten does not exist and is not a bundled sample"):
        load_image("kitten", PREP)


def test_non_image_file_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(ValueError, match=f"source: {path} is not a readable image file"):
        load_image(path, PREP)


def test_truncated_image_is_a_value_error(tmp_path):
    path = tmp_path / "cut.png"
    noise_image(64, 64).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png is not a readable image file"):
        load_image(path, PREP)


def test_directory_and_wrong_types_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_image(tmp_path, PREP)
    with pytest.raises(ValueError, match="expected a file path, a PIL image, or a sample name"):
        load_image(42, PREP)
    with pytest.raises(
        ValueError, match="model_or_weights: expected a model, a model name, a torchvision weights enum or a"
    ):
        load_image("cat", 3.0)
    with pytest.raises(
        ValueError,
        match=r"expected one of \['vgg16', 'alexnet', 'vgg11', .*'efficientnet_lite0'\], got 'resnet'",
    ):
        load_image("cat", "resnet")
    with pytest.raises(ValueError, match="sample name: expected one of"):
        pil_from_sample("kitten")
    with pytest.raises(ValueError, match="expected a PIL.Image.Image"):
        to_rgb(np.zeros((2, 2, 3)))
