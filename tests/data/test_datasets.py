"""SampleGallery and ImageFolderDataset: deterministic order, ids, skipping, preprocessing, batches."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from deconvnet.analysis.scan import scan_topk
from deconvnet.data.datasets import (
    ANCHORS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAMPLE_VIEWS,
    ImageFolderDataset,
    SampleGallery,
    View,
    batches,
    eval_transform,
)
from deconvnet.data.samples import PHOTO_SOURCES, SAMPLE_PHOTOS

# the documented default order: photos, then views, then unflipped before flipped
DEFAULT_PHOTOS = [
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "camera",
    "coins",
    "motorcycle",
    "grace_hopper",
    "clock",
    "moon",
    "brick",
    "grass",
    "gravel",
]
DEFAULT_VIEWS = [
    "scale1_center",
    "scale0.6_topleft",
    "scale0.6_center",
    "scale0.6_bottomright",
    "scale0.4_topright",
    "scale0.4_center",
    "scale0.4_bottomleft",
]
GREYSCALE_PHOTOS = ["camera", "coins", "clock", "moon", "brick", "grass", "gravel"]


@pytest.fixture(scope="module")
def gallery() -> SampleGallery:
    return SampleGallery(size=64)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def skimage_photo(name: str) -> Image.Image:
    """The raw photo, read independently of deconvnet (PIL RGB)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def matplotlib_photo(filename: str) -> Image.Image:
    from matplotlib import cbook

    return Image.open(cbook.get_sample_data(filename, asfileobj=False)).convert("RGB")


# ------------------------------------------------------------------------------------------------
# sample gallery


def test_every_registered_photo_loads_offline_as_rgb(no_network):
    assert list(PHOTO_SOURCES) == DEFAULT_PHOTOS == list(SAMPLE_PHOTOS)
    for name, source in PHOTO_SOURCES.items():
        assert source.package in ("scikit-image", "matplotlib"), name
        image = source.load()
        assert image.mode == "RGB", name
        array = np.asarray(image)
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, name
        assert 256 <= min(image.size) and max(image.size) <= 1500, (name, image.size)
        assert array.std() > 5, name  # a real picture, not a blank
        channels_equal = np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(
            array[..., 1], array[..., 2]
        )
        assert channels_equal == (name in GREYSCALE_PHOTOS), name


def test_gallery_default_layout_and_fixed_order(gallery):
    assert len(gallery) == 210 == len(SAMPLE_PHOTOS) * len(SAMPLE_VIEWS) * 2  # 15 x 7 x 2
    assert "210 images" in SampleGallery.__doc__
    assert [view.name for view in SAMPLE_VIEWS] == DEFAULT_VIEWS
    expected = [
        f"sample:{photo}/{view}{flip}"
        for photo in DEFAULT_PHOTOS
        for view in DEFAULT_VIEWS
        for flip in ("", "_flip")
    ]
    assert gallery.ids == expected
    assert len(set(gallery.ids)) == len(gallery.ids)
    assert gallery.ids[0] == "sample:astronaut/scale1_center"
    assert gallery.ids[1] == "sample:astronaut/scale1_center_flip"
    assert "sample:chelsea/scale0.6_topleft_flip" in gallery.ids


def test_gallery_photo_subset_keeps_given_order_without_duplicates():
    subset = SampleGallery(size=32, photos=["grace_hopper", "chelsea", "grace_hopper"], flips=False)
    assert len(subset) == 14
    assert subset.ids[0] == "sample:grace_hopper/scale1_center"
    assert subset.ids[7] == "sample:chelsea/scale1_center"
    assert subset.ids[-1] == "sample:chelsea/scale0.4_bottomleft"


def test_gallery_items_are_normalised_tensors_and_deterministic(gallery):
    again = SampleGallery(size=64)
    assert again.ids == gallery.ids
    for index in range(len(gallery)):  # identical bytes, image by image
        assert gallery[index][0].numpy().tobytes() == again[index][0].numpy().tobytes(), gallery.ids[index]
    for index in (0, 9, 63, 209):
        tensor, image_id = gallery[index]
        assert image_id == gallery.ids[index]
        assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
        # undo the normalisation: back to pixel values in [0, 1]
        pixels = (
            tensor * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
        )
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        expected = torch.from_numpy(np.array(gallery.pil_image(index))).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)


def test_gallery_flip_is_the_mirror_image(gallery):
    start = 14 * DEFAULT_PHOTOS.index("grace_hopper")
    for plain_index in range(start, start + 14, 2):
        plain = np.asarray(gallery.pil_image(plain_index))
        flipped = np.asarray(gallery.pil_image(plain_index + 1))
        assert gallery.ids[plain_index + 1] == gallery.ids[plain_index] + "_flip"
        np.testing.assert_array_equal(flipped, plain[:, ::-1])


def test_gallery_views_differ(gallery):
    arrays = [np.asarray(gallery.pil_image(i), dtype=np.int16) for i in range(14, 28, 2)]  # chelsea
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert np.abs(arrays[i] - arrays[j]).mean() > 2, (i, j)


# boxes worked out by hand: chelsea is 451 x 300 (side 0.6 -> 180 px, 0.4 -> 120 px), grace_hopper
# 512 x 600 (0.6 -> 307 px, 0.4 -> 205 px)
CHELSEA_BOXES = {
    "scale1_center": (76, 0, 376, 300),
    "scale0.6_topleft": (0, 0, 180, 180),
    "scale0.6_center": (136, 60, 316, 240),
    "scale0.6_bottomright": (271, 120, 451, 300),
    "scale0.4_topright": (331, 0, 451, 120),
    "scale0.4_center": (166, 90, 286, 210),
    "scale0.4_bottomleft": (0, 180, 120, 300),
}
HOPPER_BOXES = {
    "scale1_center": (0, 44, 512, 556),
    "scale0.6_bottomright": (205, 293, 512, 600),
    "scale0.4_topright": (307, 0, 512, 205),
    "scale0.4_bottomleft": (0, 395, 205, 600),
}


@pytest.mark.parametrize(
    "photo, boxes, raw",
    [
        ("chelsea", CHELSEA_BOXES, lambda: skimage_photo("chelsea")),
        ("grace_hopper", HOPPER_BOXES, lambda: matplotlib_photo("grace_hopper.jpg")),
    ],
)
def test_gallery_views_are_the_claimed_boxes(photo, boxes, raw):
    single = SampleGallery(size=48, photos=[photo], flips=False)
    whole = raw()
    for view, box in boxes.items():
        index = single.ids.index(f"sample:{photo}/{view}")
        expected = whole.crop(box).resize((48, 48), Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(np.asarray(single.pil_image(index)), np.asarray(expected), err_msg=view)


def test_gallery_enlarges_photos_smaller_than_the_view():
    clock = SampleGallery(size=400, photos=["clock"], views=[View(0.4, "center")], flips=False)
    image = clock.pil_image(0)  # a 120 px crop of the 400 x 300 photo, enlarged to 400 px
    assert image.size == (400, 400) and image.mode == "RGB"
    expected = skimage_photo("clock").crop((140, 90, 260, 210)).resize((400, 400), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))


def test_gallery_greyscale_photos_become_rgb():
    camera = SampleGallery(size=32, photos=["camera", "grass"], flips=False)
    assert len(camera) == 14
    for index in (0, 7):
        image = np.asarray(camera.pil_image(index))
        assert image.shape == (32, 32, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_view_box_geometry():
    assert View(1.0, "center").box(451, 300) == (76, 0, 376, 300)
    assert View(0.5, "topleft").box(400, 200) == (0, 0, 100, 100)
    assert View(0.5, "bottomright").box(400, 200) == (300, 100, 400, 200)
    assert View(0.5, "topright").box(400, 200) == (300, 0, 400, 100)
    assert View(0.5, "bottomleft").box(400, 200) == (0, 100, 100, 200)
    assert set(ANCHORS) == {"topleft", "topright", "center", "bottomleft", "bottomright"}
    with pytest.raises(ValueError, match="anchor: expected one of"):
        View(0.5, "left").box(400, 200)


def test_gallery_bad_arguments():
    with pytest.raises(ValueError, match="size: expected an int >= 1"):
        SampleGallery(size=0)
    unknown = "photos: unknown photo 'no_such_photo'; accepted: astronaut, chelsea, "
    with pytest.raises(ValueError, match=unknown) as error:
        SampleGallery(size=32, photos=["chelsea", "no_such_photo"])
    assert all(name in str(error.value) for name in DEFAULT_PHOTOS)
    with pytest.raises(ValueError, match="photos: unknown photo 'retina'"):
        SampleGallery(size=32, photos=["retina"])  # in skimage.data, but not a registered photo
    with pytest.raises(ValueError, match="photos: expected a non-empty list"):
        SampleGallery(size=32, photos="chelsea")
    with pytest.raises(ValueError, match="photos: expected a non-empty list"):
        SampleGallery(size=32, photos=[])
    with pytest.raises(ValueError, match="views: .*0 < scale <= 1"):
        SampleGallery(size=32, photos=["chelsea"], views=[View(1.5, "center")])
    with pytest.raises(ValueError, match="views: .*anchor in"):
        SampleGallery(size=32, photos=["chelsea"], views=[View(0.5, "middle")])
    with pytest.raises(ValueError, match="views: expected a non-empty list"):
        SampleGallery(size=32, photos=["chelsea"], views=View(0.5, "center"))


def test_gallery_index_errors(gallery):
    with pytest.raises(IndexError, match="210 out of range for a dataset of 210 images"):
        gallery[210]
    with pytest.raises(TypeError, match="index: expected an int"):
        gallery["0"]
    assert gallery[-1][1] == gallery.ids[-1]


# ------------------------------------------------------------------------------------------------
# batches


def test_batches_cover_dataset_in_order(gallery):
    loader = batches(gallery, 24)
    assert len(loader) == 9
    assert loader.ids == gallery.ids
    stacked = list(loader)
    assert [b.shape[0] for b in stacked] == [24] * 8 + [18]
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
    with caplog.at_level(logging.WARNING, logger="deconvnet.data.datasets"):
        dataset = ImageFolderDataset(folder, progress=False)
    assert dataset.ids == ["a/deep/one.jpg", "b/two.PNG", "c.webp", "gray.bmp"]
    assert len(dataset) == 4
    skipped = {s.path: s.reason for s in dataset.skipped}
    assert set(skipped) == {"a/corrupt.jpg", "notes.txt"}
    assert "unreadable image" in skipped["a/corrupt.jpg"]
    assert "not an image extension (.txt)" == skipped["notes.txt"]
    assert (
        "skipped 2 file(s)" in caplog.text and "a/corrupt.jpg" in caplog.text and "notes.txt" in caplog.text
    )


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
    from deconvnet.data.models import preprocessing

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
