"""Model registry, weights loading (random / checkpoint / imagenet cache / auto) and their reports."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
import warnings

import pytest
import torch
import torchvision.models as tvm

from deconvnet.data.models import (
    Preprocessing,
    WeightsInfo,
    WeightsUnavailableError,
    class_names,
    imagenet_cache_path,
    load_model,
    model_name,
    preprocessing,
    supported_models,
    weights_info,
)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # basename of AlexNet_Weights.IMAGENET1K_V1.url


def meta_model(constructor):
    """A torchvision model built on the meta device: right structure, no memory, no init cost."""
    with torch.device("meta"):
        return constructor(weights=None)


def assert_same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, and no network attempts."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DECONVNET_OFFLINE", "1")
    assert str(torch.hub.get_dir()).startswith(str(tmp_path))
    return tmp_path / "torch"


@pytest.fixture(scope="module")
def alexnet_state():
    """A seeded random AlexNet state_dict (seed 3), built once."""
    torch.manual_seed(3)
    return tvm.alexnet(weights=None).state_dict()


@pytest.fixture(scope="module")
def alexnet_checkpoint(alexnet_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "alexnet_seed3.pth"
    torch.save(alexnet_state, path)
    return path


# ------------------------------------------------------------------------------------------ registry


ALL_MODELS = [
    "vgg16",
    "alexnet",
    "vgg11",
    "vgg13",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
    "densenet121",
    "googlenet",
    "efficientnet_lite0",
]


def test_supported_models_are_the_vgg_family_alexnet_and_the_other_cnn_families():
    assert supported_models() == ALL_MODELS


def test_unknown_model_name_lists_the_accepted_ones():
    accepted = r"model name: expected one of \['vgg16', 'alexnet', 'vgg11', .*, 'efficientnet_lite0'\], got 'resnet152'"
    with pytest.raises(ValueError, match=accepted):
        load_model("resnet152", weights="random")
    with pytest.raises(ValueError, match=r"model name: expected one of .* got 3"):
        load_model(3, weights="random")


def test_unknown_weights_value_lists_the_accepted_ones():
    with pytest.raises(ValueError) as error:
        load_model("alexnet", weights="pretrained")
    message = str(error.value)
    assert "'pretrained'" in message
    for accepted in ("'auto'", "'imagenet'", "'random'", ".pth"):
        assert accepted in message


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*64\)"):
        load_model("alexnet", weights="random", seed=seed)


def test_bad_device_is_rejected():
    with pytest.raises(ValueError, match="device: expected e.g. 'cpu'"):
        load_model("alexnet", weights="random", device="toaster")


def test_model_name_recognises_supported_models_and_rejects_others():
    for name in ("vgg11", "vgg13", "vgg16", "vgg19", "alexnet", "vgg11_bn", "vgg16_bn", "resnet18"):
        assert model_name(meta_model(getattr(tvm, name))) == name
    with pytest.raises(
        ValueError,
        match=r"ResNet with 155 Conv2d, 155 BatchNorm2d .*not one of the supported models \['vgg16', 'alex",
    ):
        model_name(meta_model(tvm.resnet152))
    with pytest.raises(ValueError, match="Linear"):
        model_name(torch.nn.Linear(2, 2))


def test_preprocessing_is_the_imagenet_eval_transform():
    expected = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", True)
    assert preprocessing("vgg16") == expected
    assert preprocessing(meta_model(tvm.alexnet)) == expected


def test_class_names_come_from_the_weights_meta():
    names = class_names("vgg16")
    assert len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"
    assert class_names(meta_model(tvm.alexnet)) == names


# ----------------------------------------------------------------------------------- random weights


def test_random_weights_are_torch_manual_seed_and_leave_global_rng_alone(alexnet_state):
    rng_before = torch.get_rng_state()
    model = load_model("alexnet", weights="random", seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert_same_weights(model, alexnet_state)  # == torch.manual_seed(3); tvm.alexnet()
    assert not model.training
    assert model.weights_info == WeightsInfo(
        "alexnet", "random", "seed 3", False, "random initialisation (seed 3): NOT pretrained"
    )
    assert weights_info(model) is model.weights_info

    other = load_model("alexnet", weights="random", seed=4)
    assert not torch.equal(other.features[0].weight, model.features[0].weight)
    assert not torch.equal(other.classifier[6].weight, model.classifier[6].weight)


def test_random_vgg16_has_the_vgg16_structure():
    model = load_model("vgg16", weights="random", seed=0)
    assert isinstance(model, tvm.VGG)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.features) == 13
    assert model_name(model) == "vgg16"
    assert weights_info(model).source == "seed 0"


# ------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(alexnet_checkpoint, alexnet_state):
    model = load_model("alexnet", weights=str(alexnet_checkpoint))
    assert_same_weights(model, alexnet_state)
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    info = weights_info(model)
    assert info.weights == "checkpoint" and info.source == str(alexnet_checkpoint)
    assert info.pretrained is None
    # the model runs (no tensors left on the meta device)
    assert model(torch.zeros(1, 3, 63, 63)).shape == (1, 1000)


def test_checkpoint_wrapped_in_a_dict_with_dataparallel_prefix_is_unwrapped(tmp_path):
    path = tmp_path / "wrapped.pt"
    partial = {"module.features.0.weight": torch.zeros(64, 3, 11, 11)}
    torch.save({"model": partial, "epoch": 7}, path)
    with pytest.raises(ValueError) as error:
        load_model("alexnet", weights=path)
    message = str(error.value)
    # the only complaint is what is missing: the wrapper and the "module." prefix were removed
    assert "15 missing keys (features.0.bias, features.3.weight, features.3.bias" in message
    assert "unexpected" not in message and "shape" not in message


def test_checkpoint_of_another_architecture_names_file_model_and_keys(alexnet_checkpoint):
    with pytest.raises(ValueError) as error:
        load_model("vgg16", weights=str(alexnet_checkpoint))
    message = str(error.value)
    assert str(alexnet_checkpoint) in message
    assert "does not fit model 'vgg16'" in message
    assert "features.0.weight: checkpoint [64, 3, 11, 11] vs model [64, 3, 3, 3]" in message
    assert "missing keys" in message and "features.5.weight" in message


def test_missing_checkpoint_is_file_not_found(tmp_path):
    path = tmp_path / "nowhere" / "model.pth"
    with pytest.raises(FileNotFoundError, match=f"checkpoint file {path} does not exist"):
        load_model("alexnet", weights=str(path))


def test_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"checkpoint {text} cannot be read with torch.load"):
        load_model("alexnet", weights=text)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(ValueError, match=f"checkpoint {listing} holds no state_dict"):
        load_model("alexnet", weights=listing)


# ------------------------------------------------------------------------------ imagenet and auto


def test_imagenet_cache_path_is_torchvisions(torch_home):
    assert imagenet_cache_path("alexnet") == torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    assert imagenet_cache_path("vgg16").name == "vgg16-397923af.pth"


def test_imagenet_weights_offline_fail_fast_naming_file_and_cache(torch_home, monkeypatch):
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network touched")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        load_model("alexnet", weights="imagenet")
    assert time.monotonic() - start < 10.0  # fails fast offline: no network attempt, no hang
    assert attempts == []  # DECONVNET_OFFLINE=1: not even the 3-second probe
    assert type(error.value) is WeightsUnavailableError
    message = str(error.value)
    assert ALEXNET_FILE in message
    assert str(torch_home / "hub" / "checkpoints" / ALEXNET_FILE) in message
    assert tvm.AlexNet_Weights.IMAGENET1K_V1.url in message
    assert "TORCH_HOME" in message and "checkpoint" in message


def test_auto_without_cached_weights_warns_and_uses_random(torch_home, caplog, alexnet_state):
    with caplog.at_level(logging.WARNING, logger="deconvnet.data.models"):
        with pytest.warns(UserWarning, match="using RANDOM, UNTRAINED weights \\(seed 3\\)"):
            model = load_model("alexnet", seed=3)
    assert any(ALEXNET_FILE in r.getMessage() and "RANDOM" in r.getMessage() for r in caplog.records)
    info = weights_info(model)
    assert (info.weights, info.source, info.pretrained) == ("random", "seed 3", False)
    assert_same_weights(model, alexnet_state)


def test_auto_picks_a_cached_imagenet_file(torch_home, alexnet_checkpoint, alexnet_state):
    cached = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    cached.parent.mkdir(parents=True)
    cached.symlink_to(alexnet_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model("alexnet")
    assert_same_weights(model, alexnet_state)
    info = weights_info(model)
    assert (info.weights, info.source, info.pretrained) == ("imagenet", str(cached), True)
    # torchvision's own loader resolves the same file
    assert_same_weights(tvm.alexnet(weights=tvm.AlexNet_Weights.IMAGENET1K_V1), alexnet_state)


# ------------------------------------------------------------------------------------ weights_info


def test_weights_info_of_a_caller_supplied_model_is_unknown():
    info = weights_info(meta_model(tvm.vgg16))
    assert (info.model, info.weights, info.source, info.pretrained) == (
        "vgg16",
        "unknown",
        "caller-supplied model",
        None,
    )
    assert info.description.startswith("unknown (caller-supplied model)")
    assert weights_info(torch.nn.Linear(1, 1)).model == "Linear"


def test_weights_info_is_frozen_and_json_ready():
    description = "random initialisation (seed 0): NOT pretrained"
    info = WeightsInfo("alexnet", "random", "seed 0", False, description)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.weights = "imagenet"
    assert json.loads(json.dumps(info.as_dict())) == {
        "model": "alexnet",
        "weights": "random",
        "source": "seed 0",
        "pretrained": False,
        "description": description,
    }
