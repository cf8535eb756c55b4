"""SampleGallery and ImageFolderDataset: deterministic order, ids, skipping, preprocessing, batches."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from deconvnet.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    SampleGallery,
    View,
    batches,
    eval_transform,
)
from deconvnet.scan import scan_topk


@pytest.fixture(scope="module")
def gallery() -> SampleGallery:
    return SampleGallery(size=64)


# ------------------------------------------------------------------------------------------------
# sample gallery


def test_gallery_default_layout_and_unique_ids(gallery):
    assert len(gallery) == 64  # 8 photos x 4 views x 2 flips
    assert len(set(gallery.ids)) == len(gallery.ids)
    assert gallery.ids[0] == "sample:astronaut/scale1_center"
    assert gallery.ids[1] == "sample:astronaut/scale1_center_flip"
    assert "sample:chelsea/scale0.6_topleft_flip" in gallery.ids
    assert all(i.startswith("sample:") for i in gallery.ids)


def test_gallery_items_are_normalised_tensors_and_deterministic(gallery):
    again = SampleGallery(size=64)
    assert again.ids == gallery.ids
    for index in (0, 9, 63):
        tensor, image_id = gallery[index]
        assert image_id == gallery.ids[index]
        assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
        assert torch.equal(tensor, again[index][0])
        # undo the normalisation: back to pixel values in [0, 1]
        pixels = tensor * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        expected = torch.from_numpy(np.array(gallery.pil_image(index))).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)


def test_gallery_flip_is_the_mirror_image(gallery):
    plain = np.asarray(gallery.pil_image(2))
    flipped = np.asarray(gallery.pil_image(3))
    assert gallery.ids[3] == gallery.ids[2] + "_flip"
    np.testing.assert_array_equal(flipped, plain[:, ::-1])


def test_gallery_views_differ(gallery):
    arrays = [np.asarray(gallery.pil_image(i), dtype=np.int16) for i in range(0, 8, 2)]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert np.abs(arrays[i] - arrays[j]).mean() > 2


def test_gallery_grayscale_photo_becomes_rgb():
    camera = SampleGallery(size=32, photos=["camera"], flips=False)
    assert len(camera) == 4
    image = np.asarray(camera.pil_image(0))
    assert image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_view_box_geometry():
    assert View(1.0, "center").box(451, 300) == (76, 0, 376, 300)
    assert View(0.5, "topleft").box(400, 200) == (0, 0, 100, 100)
    assert View(0.5, "bottomright").box(400, 200) == (300, 100, 400, 200)


def test_gallery_bad_arguments():
    with pytest.raises(ValueError, match="size: expected an int >= 1"):
        SampleGallery(size=0)
    with pytest.raises(ValueError, match="photos: 'no_such_photo' is not a skimage.data image"):
        SampleGallery(size=32, photos=["no_such_photo"])
    with pytest.raises(ValueError, match="photos: expected a non-empty list"):
        SampleGallery(size=32, photos="chelsea")
    with pytest.raises(ValueError, match="views: .*0 < scale <= 1"):
        SampleGallery(size=32, photos=["chelsea"], views=[View(1.5, "center")])


def test_gallery_index_errors(gallery):
    with pytest.raises(IndexError, match="64 out of range for a dataset of 64 images"):
        gallery[64]
    with pytest.raises(TypeError, match="index: expected an int"):
        gallery["0"]
    assert gallery[-1][1] == gallery.ids[-1]


# ------------------------------------------------------------------------------------------------
# batches


def test_batches_cover_dataset_in_order(gallery):
    loader = batches(gallery, 24)
    assert len(loader) == 3
    assert loader.ids == gallery.ids
    stacked = list(loader)
    assert [b.shape[0] for b in stacked] == [24, 24, 16]
    assert torch.equal(stacked[1][5], gallery[29][0])
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        batches(gallery, 0)


def test_scan_numbers_images_like_dataset_ids():
    small = SampleGallery(size=64, photos=["chelsea", "coffee"], flips=True)
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    result = scan_topk(model, batches(small, 5), k=3, stages=(1,), progress=False)
    # the top image of channel 0, recomputed from the dataset item with that number
    number = int(result[1].image[0, 0])
    tensor, _ = small[number]
    with torch.inference_mode():
        stage1 = model.features[:3](tensor.unsqueeze(0))[0, 0]
    torch.testing.assert_close(stage1.max(), result[1].values[0, 0])


# ------------------------------------------------------------------------------------------------
# image folder


def save_image(path, size=(40, 30), colour=(200, 20, 20), **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **kwargs)


@pytest.fixture()
def folder(tmp_path):
    save_image(tmp_path / "b" / "two.PNG", colour=(0, 255, 0))
    save_image(tmp_path / "a" / "deep" / "one.jpg", colour=(255, 0, 0))
    save_image(tmp_path / "c.webp", colour=(0, 0, 255))
    Image.new("L", (30, 30), 128).save(tmp_path / "gray.bmp")
    rng = np.random.default_rng(0)
    (tmp_path / "a" / "corrupt.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_finds_images_sorted_and_skips_bad_files(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="deconvnet.datasets"):
        dataset = ImageFolderDataset(folder, progress=False)
    assert dataset.ids == ["a/deep/one.jpg", "b/two.PNG", "c.webp", "gray.bmp"]
    assert len(dataset) == 4
    skipped = {s.path: s.reason for s in dataset.skipped}
    assert set(skipped) == {"a/corrupt.jpg", "notes.txt"}
    assert "unreadable image" in skipped["a/corrupt.jpg"]
    assert "not an image extension (.txt)" == skipped["notes.txt"]
    assert "skipped 2 file(s)" in caplog.text and "a/corrupt.jpg" in caplog.text and "notes.txt" in caplog.text


def test_folder_items_use_eval_preprocessing(folder):
    dataset = ImageFolderDataset(folder, progress=False)
    tensor, image_id = dataset[1]
    assert image_id == "b/two.PNG" and tensor.shape == (3, 224, 224)
    expected = (torch.tensor([0.0, 1.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(tensor[:, 100, 100], expected)
    gray, _ = dataset[3]
    assert gray.shape == (3, 224, 224)  # grayscale converted to RGB
    small = ImageFolderDataset(folder, transform=eval_transform(40, 32), progress=False)
    assert [b.shape for b in batches(small, 3)] == [(3, 3, 32, 32), (1, 3, 32, 32)]


def test_eval_transform_matches_torchvision_weights_preset():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 260, 3), dtype=np.uint8))
    preset = torchvision.models.VGG16_Weights.IMAGENET1K_V1.transforms()
    torch.testing.assert_close(eval_transform()(image), preset(image))


def test_folder_follows_symlinked_folders_once(tmp_path):
    save_image(tmp_path / "real" / "x.png")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    dataset = ImageFolderDataset(tmp_path, progress=False)
    assert dataset.ids == ["link/x.png"]  # one copy, the first in sorted order


def test_folder_accepts_model_preprocessing(folder):
    from deconvnet.models import preprocessing

    dataset = ImageFolderDataset(folder, preprocessing=preprocessing("alexnet"), progress=False)
    reference = ImageFolderDataset(folder, progress=False)
    assert torch.equal(dataset[0][0], reference[0][0])
    with pytest.raises(ValueError, match="preprocessing: expected resize_size"):
        ImageFolderDataset(folder, preprocessing=object(), progress=False)
    with pytest.raises(ValueError, match="at most one"):
        ImageFolderDataset(folder, transform=eval_transform(), preprocessing=preprocessing("vgg16"))


def test_folder_composites_transparency_over_white(tmp_path):
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(ImageFolderDataset(tmp_path, progress=False).pil_image(0)).min() == 255


def test_folder_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    save_image(tmp_path / "rotated.jpg", size=(40, 20), exif=exif)
    dataset = ImageFolderDataset(tmp_path, progress=False)
    assert dataset.pil_image(0).size == (20, 40)


def test_truncated_file_caught_by_full_decode(tmp_path):
    save_image(tmp_path / "good.png")
    noisy = Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    noisy.save(tmp_path / "truncated.jpg")
    data = (tmp_path / "truncated.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    strict = ImageFolderDataset(tmp_path, full_decode=True, progress=False)
    assert strict.ids == ["good.png"]
    assert [s.path for s in strict.skipped] == ["truncated.jpg"]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        ImageFolderDataset(tmp_path / "does_not_exist", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no readable images under .*empty"):
        ImageFolderDataset(tmp_path / "empty", progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    (tmp_path / "junk" / "y.png").write_bytes(b"not png")
    with pytest.raises(ValueError, match=r"no readable images under .*junk.*2 file\(s\) skipped"):
        ImageFolderDataset(tmp_path / "junk", progress=False)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a directory"):
        ImageFolderDataset(tmp_path / "file.png", progress=False)
