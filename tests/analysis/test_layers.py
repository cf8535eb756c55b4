"""The layers invariance and correspondence read (`deconvnet.analysis.layers`) on any supported
model: what `layers` accepts (checked on the meta-device skeleton a job has before loading), the
defaults (the paper's on VGG / AlexNet, fc7's analogue elsewhere), which layers the classifier's
weights compute, the input size a set of layers needs, and the layers' titles in the figures.

The penultimate vector is checked against the model's own forward: a forward hook on the chosen
module and a forward pre-hook on the last nn.Linear (what it really reads). Offline and fast:
seeded random weights at 64 px.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deconvnet
from deconvnet.analysis import layers as lay
from deconvnet.figures import correspondence as corr_fig
from deconvnet.figures import invariance as inv_fig
from deconvnet.jobs.request import check_model

PENULTIMATE = {
    "resnet18": "avgpool",
    "mobilenet_v2": "classifier.0",
    "efficientnet_lite0": "global_pool",
    "googlenet": "avgpool",
    "vgg16_bn": "classifier.4",
    "densenet121": None,  # functional ReLU and pooling: no module outputs the vector
    "alexnet": "classifier.5",
}


def skeleton(name: str) -> nn.Module:
    """The architecture on the meta device, as a job checks it before loading."""
    return check_model(name, "random", 0, "cpu").skeleton


@pytest.mark.parametrize("name", list(PENULTIMATE))
def test_the_penultimate_point_and_the_defaults(name):
    model = skeleton(name)
    assert lay.penultimate_point(model) == PENULTIMATE[name]
    chain = name in ("alexnet", "vgg16")
    last = "fc7" if chain else PENULTIMATE[name] or "logits"
    assert lay.default_layers(model, 1) == (1, last)
    assert lay.default_layers(model, 5) == (5, last)
    assert lay.reads_classifier(model, "logits") and not lay.reads_classifier(model, 5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_lite0", "googlenet"])
def test_the_penultimate_vector_is_what_the_last_linear_reads(name):
    """The chosen module's output, flattened, equals the last nn.Linear's input (model's own
    forward, hooks removed afterwards)."""
    model = deconvnet.load_model(name, weights="random", seed=0)
    path = lay.penultimate_point(model)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen = {}
    hooks = [
        model.get_submodule(path).register_forward_hook(lambda m, i, o: seen.update(out=o.flatten(1))),
        last.register_forward_pre_hook(lambda m, i: seen.update(read=i[0])),
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    for hook in hooks:
        hook.remove()
    assert seen["out"].shape == seen["read"].shape and torch.equal(seen["out"], seen["read"])


def test_reads_classifier_on_vgg_and_resnet():
    vgg, resnet = skeleton("vgg16"), skeleton("resnet18")
    assert [lay.reads_classifier(vgg, p) for p in (1, 5, "pool5", "avgpool", "fc6", "fc7", "logits")] == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    assert lay.reads_classifier(vgg, "classifier.0") and lay.reads_classifier(resnet, "fc")
    assert not any(lay.reads_classifier(resnet, p) for p in (1, "layer3", "layer4.1", "avgpool", "pre5"))


def test_check_layers_takes_numbers_names_paths_and_logits():
    resnet = skeleton("resnet18")
    assert lay.check_layers(resnet, 3) == (3,)
    assert lay.check_layers(resnet, "layer3.1") == ("layer3.1",)
    chosen = lay.check_layers(resnet, [1, "layer3", "layer4.1", "avgpool", "fc", "logits", "pre2", "input"])
    assert chosen == (1, "layer3", "layer4.1", "avgpool", "fc", "logits", "pre2", "input")
    assert lay.check_layers(skeleton("vgg16"), [torch.tensor(2).item(), "pool5", "fc6"]) == (
        2,
        "pool5",
        "fc6",
    )
    lite0 = skeleton("efficientnet_lite0")
    assert lay.check_layers(lite0, (2, "blocks.4", "blocks.5.1", "global_pool", "logits"))[1] == "blocks.4"


BAD_LAYERS = [
    ("resnet18", 6, r"layers: expected a stage 1\.\.5 or its name, a module path .*got 6 "),
    ("resnet18", 0, r"layers: expected a stage 1\.\.5 .*got 0"),
    ("resnet18", True, r"layers: expected a stage 1\.\.5 .*got True"),
    ("resnet18", 2.0, r"layers: expected a stage 1\.\.5 .*got 2\.0"),
    (
        "resnet18",
        "fc7",
        r"layers: 'fc7' is neither a stage nor a module path of this model's graph; expected a "
        r"stage 1\.\.5 .*\(this model's stages 1\.\.5: relu, layer1, layer2, layer3, layer4\)",
    ),
    ("efficientnet_lite0", "blocks.9", r"layers: 'blocks\.9' is neither .*stages 1\.\.5: blocks\.0, "),
    ("efficientnet_lite0", "blocks.4:42", r"layers: 'blocks\.4:42' is neither"),
    ("mobilenet_v2", [1, "features.6", 1], r"layers: each layer once, got 1 more than once"),
    ("mobilenet_v2", [], r"layers: expected .* or a non-empty list of them, got \[\]"),
    ("mobilenet_v2", None, r"layers: expected .* or a non-empty list of them, got None"),
    ("vgg16", "fc8", r"layers: 'fc8' is neither .*stages 1\.\.5: pool1, pool2, pool3, pool4, pool5\)"),
]


@pytest.mark.parametrize("name, value, message", BAD_LAYERS)
def test_bad_layers_are_named_with_what_is_accepted(name, value, message):
    with pytest.raises(ValueError, match=message):
        lay.check_layers(skeleton(name), value)


def test_the_deepest_point_is_what_the_images_are_checked_against():
    vgg, alexnet = skeleton("vgg16"), skeleton("alexnet")
    assert [deconvnet.min_input_size(vgg, p) for p in (1, "features.16", 4)] == [2, 8, 16]
    assert lay.deepest_point(vgg, (1, "features.16", 2)) == "features.16"  # pool3's path
    assert lay.deepest_point(vgg, ("pre4", 2, "features.16")) == 4
    assert lay.deepest_point(vgg, (5, "fc7")) is None and lay.deepest_point(vgg, (2, 5)) == 5
    assert lay.deepest_point(alexnet, (2, "logits")) is None
    assert lay.deepest_point(vgg, ("input",)) == 1


def test_layer_titles():
    vgg, resnet, lite0 = skeleton("vgg16"), skeleton("resnet18"), skeleton("efficientnet_lite0")
    assert [inv_fig.layer_title(vgg, p) for p in (1, "pool5", "fc7", "logits")] == [
        "layer 1 (pool1)",
        "layer 5 (pool5)",
        "layer 7 (fc7)",
        "the logits",
    ]
    assert [inv_fig.layer_title(resnet, p) for p in (1, "layer3", "layer4.1", "avgpool", "pre2")] == [
        "stage 1 (relu)",
        "stage 4 (layer3)",
        "layer4.1",
        "avgpool (the logits' input)",
        "pre2 (stage 2 before its activation)",
    ]
    assert inv_fig.layer_title(lite0, "global_pool") == "global_pool (the logits' input)"
    assert [corr_fig.layer_title(vgg, p) for p in (5, "fc7", "classifier.4", "classifier.1")] == [
        "stage 5 (pool5)",
        "fc7",
        "classifier.4 (the logits' input)",  # fc7 by its module path
        "classifier.1",
    ]
    assert [corr_fig.layer_title(resnet, p) for p in (5, "layer4", "avgpool", "logits")] == [
        "stage 5 (layer4)",
        "stage 5 (layer4)",
        "avgpool (the logits' input)",
        "logits",
    ]
