"""Layer-wise relevance propagation against zennit 0.5 (the same composites and canonizers) on VGG16,
VGG16-BN and ResNet-18 in float64, K targets of one image, unit and channel targets, conservation
where the rules conserve (also on EfficientNet-Lite0's graph), bad input and the caller's model.

zennit's batch-norm merge leaves each norm computing x / sqrt(1 + eps) instead of the identity
(`MergeBatchNorm.merge_batch_norm` sets running_var to 1 but keeps eps), a relative change of
~5e-6 per norm; the models with batch norm here use eps = 0, where its merge is exact.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from zennit.attribution import Gradient
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

import deconvnet
from deconvnet.core.targets import Channel, Unit

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LOW = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD)], dtype=torch.float64).view(1, 3, 1, 1)
HIGH = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)], dtype=torch.float64).view(1, 3, 1, 1)
COMPOSITES = ("epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_plus")
ZENNIT = {
    "epsilon_gamma_box": lambda canonizers: EpsilonGammaBox(low=LOW, high=HIGH, canonizers=canonizers),
    "epsilon_plus_flat": lambda canonizers: EpsilonPlusFlat(canonizers=canonizers),
    "epsilon_alpha2_beta1": lambda canonizers: EpsilonAlpha2Beta1(canonizers=canonizers),
    "epsilon_plus": lambda canonizers: EpsilonPlus(canonizers=canonizers),
}
CANONIZERS = {"vgg16": VGGCanonizer, "vgg16_bn": VGGCanonizer, "resnet18": ResNetCanonizer}


def box(composite: str) -> dict:
    """The input box of the ImageNet normalisation, given explicitly (models with eps = 0 are not
    recognised as torchvision's, whose weights' normalisation would give it)."""
    return {"low": LOW, "high": HIGH} if composite == "epsilon_gamma_box" else {}


def seeded_model(name: str) -> torch.nn.Module:
    """A random-init torchvision model in float64; batch norms with eps 0 and statistics that are
    not the identity."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = getattr(tvm, name)().eval().double()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 0.0
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module", params=sorted(CANONIZERS))
def named_model(request):
    return request.param, seeded_model(request.param)


def zennit_relevance(model, x, seed, composite: str, canonizer, network=None):
    """zennit's relevance at the input, the output seeded by `seed(output)`; on a copy."""
    network = copy.deepcopy(network if network is not None else model)
    canonizers = [canonizer()] if canonizer is not None else []
    with Gradient(network, ZENNIT[composite](canonizers)) as attributor:
        _, relevance = attributor(x, seed)
    return relevance


def class_seed(classes):
    return lambda out: F.one_hot(torch.as_tensor(classes), out.shape[1]).to(out) * out


def image(batch: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, side, side, dtype=torch.float64, generator=generator)


@pytest.mark.parametrize("composite", COMPOSITES)
def test_lrp_equals_zennit(named_model, composite):
    name, model = named_model
    x = image()
    got = deconvnet.lrp(model, x, 7, composite, **box(composite))
    want = zennit_relevance(model, x, class_seed([7, 7]), composite, CANONIZERS[name])
    assert got.shape == (2, 3, 32, 32)
    assert torch.allclose(got, want, rtol=0, atol=1e-6 * want.abs().max())


def test_the_default_box_is_the_weights_normalisation(vgg_float64):
    x = image(1)
    got = deconvnet.lrp(vgg_float64, x, 3)
    want = zennit_relevance(vgg_float64, x, class_seed([3]), "epsilon_gamma_box", VGGCanonizer)
    assert torch.allclose(got, want, rtol=0, atol=1e-6 * want.abs().max())


def test_k_targets_of_one_image_equal_one_zennit_call_each():
    model = seeded_model("resnet18")
    x = image(1, 40, seed=1)
    got = deconvnet.lrp(model, x, [1, 5, 9], "epsilon_plus", chunk_size=2)
    for row, c in enumerate([1, 5, 9]):
        want = zennit_relevance(model, x, class_seed([c]), "epsilon_plus", ResNetCanonizer)
        assert torch.allclose(got[row : row + 1], want, rtol=0, atol=1e-6 * want.abs().max())


def unit_seed(channel: int, y: int | None = None, x: int | None = None):
    def seed(out):
        mask = torch.zeros_like(out)
        if y is None:
            mask[:, channel] = 1.0
        else:
            mask[:, channel, y, x] = 1.0
        return mask * out

    return seed


def test_unit_and_channel_targets_equal_zennit_on_the_features_up_to_the_stage(vgg_float64):
    x = image(1, 48, seed=2)
    features = vgg_float64.features[: deconvnet.stage(vgg_float64, 3).index + 1]
    got = deconvnet.lrp(vgg_float64, x, Unit(3, 17, 2, 3), "epsilon_plus_flat")
    want = zennit_relevance(vgg_float64, x, unit_seed(17, 2, 3), "epsilon_plus_flat", None, features)
    assert torch.allclose(got, want, rtol=0, atol=1e-6 * want.abs().max())
    got = deconvnet.lrp(vgg_float64, x, Channel(3, 40), "epsilon_gamma_box")
    want = zennit_relevance(vgg_float64, x, unit_seed(40), "epsilon_gamma_box", None, features)
    assert torch.allclose(got, want, rtol=0, atol=1e-6 * want.abs().max())


def without_biases(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose layers have no bias and whose batch norms have mean 0 and shift 0: every
    merged layer is linear, so the conserving rules must hand the whole score down."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
            m.bias.data.zero_()
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.zero_()
            m.bias.data.zero_()
    return model


@pytest.fixture(scope="module", params=["vgg16", "resnet18"])
def unbiased(request):
    return without_biases(seeded_model(request.param))


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_plus_flat", "epsilon_plus"])
def test_relevance_is_conserved_where_the_rules_conserve(unbiased, composite):
    model = unbiased
    x = image(2, 32, seed=3)
    logits = model(x)
    exact = {"epsilon": 1e-30, "stabilizer": 1e-30}  # stabilizers take a share: none here
    got = deconvnet.lrp(model, x, None, composite, **box(composite), **exact)
    score = logits.gather(1, logits.argmax(1, keepdim=True))[:, 0]
    assert torch.allclose(got.sum((1, 2, 3)), score, rtol=1e-6, atol=0)


def lite0_float32() -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0").eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    return without_biases(model)


def test_efficientnet_lite0_conserves_and_k_targets_equal_single_targets():
    """TF-same convolutions, depthwise convolutions, BatchNormAct2d with ReLU6, residual adds."""
    model = lite0_float32()
    x = image(1, 48, seed=4).float()
    logits = model(x)[0]
    maps = deconvnet.lrp(model, x, [3, 11], "epsilon_gamma_box", epsilon=1e-30, stabilizer=1e-30)
    torch.testing.assert_close(maps.sum((1, 2, 3)).double(), logits[[3, 11]].double(), rtol=1e-4, atol=0)
    single = deconvnet.lrp(model, x, 11, "epsilon_gamma_box", epsilon=1e-30, stabilizer=1e-30)
    # K rows go down together ([2, C, h, w]), the single target alone ([1, C, h, w]): another batch
    # shape, for which a CPU's kernels may sum each output's products (up to 1280 in conv_head) in
    # another order, ~sqrt(1280) * 2^-24 ~ 2e-6 of their scale per layer in float32, ~1e-5 over
    # Lite0's ~30 layers. Bound: 1e-4 of the map's largest magnitude (measured 2.3e-7 with AVX-512
    # and AVX2 kernels, 4.6e-7 SSE4.1)
    torch.testing.assert_close(maps[1:], single, rtol=0, atol=1e-4 * float(single.abs().max()))
    # one row at a time (chunk_size=1): the single target's own shapes, so equal bit for bit
    rows = deconvnet.lrp(
        model, x, [3, 11], "epsilon_gamma_box", epsilon=1e-30, stabilizer=1e-30, chunk_size=1
    )
    assert torch.equal(rows[1:], single)


def test_explain_runs_each_composite_with_its_options(vgg_float64):
    x = image(1)
    got = deconvnet.explain(vgg_float64, x, "lrp", 3, composite="epsilon_gamma_box", gamma=0.5)
    assert torch.equal(got, deconvnet.lrp(vgg_float64, x, 3, "epsilon_gamma_box", gamma=0.5))
    assert not torch.equal(got, deconvnet.lrp(vgg_float64, x, 3))
    with pytest.raises(ValueError, match=r"rule_options: composite 'epsilon_plus' does not take gamma"):
        deconvnet.explain(vgg_float64, x, "lrp", 3, composite="epsilon_plus", gamma=0.5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"composite": "epsilon"}, r"composite: expected one of epsilon_gamma_box, epsilon_plus_flat"),
        ({"composite": "epsilon_plus", "low": 0.0}, r"rule_options: .* does not take low"),
        ({"epsilon": -1.0}, r"epsilon: expected a finite number >= 0"),
        ({"gamma": float("nan")}, r"gamma: expected a finite number >= 0"),
        ({"low": 1.0, "high": 0.0}, r"low, high: the box needs low < high"),
        ({"target": Unit(7, 0)}, r"stage: expected an int in 1..5"),
        ({"chunk_size": 0}, r"chunk_size: expected an int >= 1"),
    ],
)
def test_bad_arguments_are_named_before_any_work(vgg_float64, arguments, message):
    with pytest.raises(ValueError, match=message):
        deconvnet.lrp(vgg_float64, image(1), **arguments)


def test_a_model_of_unknown_weights_needs_the_box():
    model = seeded_model("vgg16_bn")  # eps 0: not torchvision's VGG16-BN
    with pytest.raises(ValueError, match=r"low: the box of valid inputs .* pass low= and high="):
        deconvnet.lrp(model, image(1))
    deconvnet.lrp(model, image(1), composite="epsilon_plus")  # no box needed


def test_the_callers_model_is_left_untouched():
    model = seeded_model("resnet18").train()
    before = {name: (p.clone(), p._version) for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    deconvnet.lrp(model, image(1), 2, "epsilon_gamma_box", **box("epsilon_gamma_box"))
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name][0]) and p._version == before[name][1]
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name])
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
