"""The optimisation-family methods (`deconvnet.optim`) measured with the model itself.

Every property is checked on the model's own activations, computed here from `model.features`
(cross-checked once against `deconvnet.core.probe`), never on the method's own report:

- visualize_filters: a channel's image excites it more than natural photos and more than the
  other channels' images do (diagonal dominance); negate lowers it; the same image alone, in a
  batch, in any order and batch size (float64); 'fourier' stays in valid colours; the border is
  left out of the objective.
- visualize_units: crop=True is crop=False's receptive-field box (float64); unit_crop's boxes
  and the unit's value on the crop against the full image, at every position.
- class_model: argmax of the logits is the class; l2 shrinks the image, l1 makes exact zeros;
  negate lowers the score.
- fooling_image: softmax(target) >= confidence within valid colours; the report's numbers are
  the image's; too few steps warn; `steps` is the number of steps.
- invert: relative feature error below a stated bound and far below grey noise's.
- deep_dream: the stage's (or one channel's) energy 0.5 ||a||^2 rises (negate: falls).
- seeded runs repeat bit for bit; the caller's model is left as it was; bad input is a
  ValueError naming the input.

Models are torchvision's seeded random initialisations (conftest). float64 copies used for the
equalities carry the real `features` and a small classifier (they never read logits); they are
made from the float32 fixtures so that VGG16's 120M-value classifier is not converted.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvnet
from deconvnet.core.probe import probe
from deconvnet.optim import Jitter, Optimized, unit_crop
from deconvnet.optim.params import FourierImage, valid_range

NATURAL = ("cat", "astronaut", "coffee", "chelsea", "rocket")
F64_ATOL = 1e-9  # float64 equalities (observed: 0 to 4e-16)
FEATURE_ERROR_BOUND = 0.2  # invert, AlexNet stage 1 at 64 px, 60 steps: observed ~0.1
HOT_SCALE = 500.0  # last Linear layer x500: logits of random AlexNet become large enough
OLD_RULE = dict(step="normalized", max_change=None)  # the L2-normalised ascent, valid colours only
FOOL = dict(target=500, lr=0.1, steps=60, **OLD_RULE)  # reaches 0.99 after 21 steps (x50: only ~0.01-0.2)


# ----------------------------------------------------------------------------- fixtures


def _features64(model: nn.Module) -> nn.Module:
    """float64 copy of `model` with its real `features` and a small seeded classifier."""
    linear = next(m for m in model.classifier if isinstance(m, nn.Linear))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        small = nn.Sequential(nn.Linear(linear.in_features, 10))
    return copy.deepcopy(model, {id(model.classifier): small}).double().eval()


@pytest.fixture(scope="session")
def vgg64(vgg_float32):
    return _features64(vgg_float32)


@pytest.fixture(scope="session")
def alex64(alexnet_float32):
    return _features64(alexnet_float32)


@pytest.fixture(scope="session")
def alex(alexnet_float32):
    return alexnet_float32


@pytest.fixture(scope="session")
def vgg(vgg_float32):
    return vgg_float32


@pytest.fixture(scope="session")
def hot_alex(alexnet_float32):
    """Random AlexNet whose last Linear layer is scaled up, so a 0.99 probability is reachable."""
    model = copy.deepcopy(alexnet_float32)
    last = [m for m in model.classifier if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(HOT_SCALE)
        last.bias.mul_(HOT_SCALE)
    return model


@pytest.fixture(scope="session")
def fooled(hot_alex):
    """fooling_image(**FOOL) on the cat at 64 px; no warning may come (it reaches the target)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return deconvnet.fooling_image(hot_alex, photo(hot_alex, 64), details=True, **FOOL)


# ----------------------------------------------------------------------------- helpers


@functools.cache
def _photo(name: str, size: int, model_name: str) -> torch.Tensor:
    x = deconvnet.load_image(name, model_name)  # [1, 3, 224, 224], normalised
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def photo(model, size, name="cat"):
    """A natural photo resized to size x size, in the model's normalised space and dtype."""
    dtype = next(model.parameters()).dtype
    return _photo(name, size, deconvnet.model_name(model)).to(dtype)


def photos(model, size, names=NATURAL):
    return torch.cat([photo(model, size, n) for n in names])


def stage_maps(model, x, stage):
    """The stage's output [B, C, h, w], straight from `model.features` (no library code)."""
    index = deconvnet.stage(model, stage).index
    with torch.no_grad():
        return model.features[: index + 1](x)


def channel_means(model, x, stage, border=0):
    a = stage_maps(model, x, stage)
    if border:
        a = a[:, :, border : a.shape[2] - border, border : a.shape[3] - border]
    return a.mean(dim=(2, 3))  # [B, C]


def logits(model, x):
    with torch.no_grad():
        return model(x)


def energy(model, x, stage, channel=None):
    """0.5 ||a||^2 of the stage (or of one channel), one value per image."""
    with torch.no_grad():
        a = probe(model, x, [stage])[stage]
    if channel is not None:
        a = a[:, channel]
    return 0.5 * a.pow(2).flatten(1).sum(dim=1)


def in_valid_range(model, x):
    low, high = valid_range(deconvnet.preprocessing(model), x.dtype, x.device)
    return bool(((x >= low) & (x <= high)).all())


def grey_noise(model, size, seed=0):
    """Our own grey-noise start, (U - 0.5) * 0.25 around the mean colour, normalised."""
    prep = deconvnet.preprocessing(model)
    u = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return ((u - 0.5) * 0.25 / torch.tensor(prep.std).view(1, 3, 1, 1)).to(next(model.parameters()).dtype)


def noise_start(model, channels, size):
    """The documented default start (seed 0, the first spread): channel c's grey noise drawn from
    a generator seeded with seed * 1_000_003 + c = c, made here with our own `grey_noise`. The
    baseline of "the objective rose" is measured on it with the model, not read from `history`."""
    return torch.cat([grey_noise(model, size, seed=c) for c in channels])


def fourier_start(model, channels, size):
    """The documented Fourier start (seed 0, the first spread): channel c's spectrum of sd 0.01
    drawn from a generator seeded with c, as the image lucid's parameterisation makes of it
    (`FourierImage`, tested against lucid's formula in test_optim_engine). The baseline of "the
    objective rose" is measured on it with the model, not read from `history`."""
    spectra = [
        torch.randn((1, 3, size, size // 2 + 1, 2), generator=torch.Generator().manual_seed(c)) * 0.01
        for c in channels
    ]
    dtype = next(model.parameters()).dtype
    param = FourierImage(torch.cat(spectra).to(dtype), size, size, deconvnet.preprocessing(model))
    with torch.no_grad():
        return param.image()


def embed(crop_image, box, size, dtype):
    """Place `crop_image` [K, 3, h, w] at `box` in a size x size image of zeros (mean colour)."""
    full = torch.zeros(crop_image.shape[0], 3, size, size, dtype=dtype)
    full[:, :, box[0] : box[2], box[1] : box[3]] = crop_image
    return full


def test_probe_agrees_with_features(alex):
    """The energy helper reads the same activations as the plain `model.features` slices."""
    x = photo(alex, 64)
    for s in (1, 2, 3, 5):
        torch.testing.assert_close(probe(alex, x, [s])[s].detach(), stage_maps(alex, x, s), rtol=0, atol=0)


# ----------------------------------------------------------------------------- visualize_filters

FILTER_CASES = [("vgg16", 2, 32), ("alexnet", 2, 64)]
CHANNELS = list(range(8))  # none of them is 0 on its grey-noise start at these sizes
FILTER_STEPS = 12  # own / best natural photo >= 1.3 (VGG16), 7 (AlexNet)


@pytest.fixture(scope="session")
def float32_models(vgg, alex):
    return {"vgg16": vgg, "alexnet": alex}


@pytest.fixture(scope="session")
def filter_runs(float32_models):
    """visualize_filters(CHANNELS, details=True) per (model, stage, size, negate), run once."""
    runs: dict = {}

    def get(name, stage, size, negate):
        key = (name, stage, size, negate)
        if key not in runs:
            runs[key] = deconvnet.visualize_filters(
                float32_models[name],
                stage,
                CHANNELS,
                size=size,
                steps=FILTER_STEPS,
                negate=negate,
                details=True,
            )
        return runs[key]

    return get


@pytest.mark.parametrize("name, stage, size", FILTER_CASES)
def test_filter_images_excite_their_channels(float32_models, filter_runs, name, stage, size):
    model = float32_models[name]
    result = filter_runs(name, stage, size, False)
    assert isinstance(result, Optimized)
    k = len(CHANNELS)
    assert result.images.shape == (k, 3, size, size)
    assert result.history.shape == (FILTER_STEPS, k)
    m = channel_means(model, result.images, stage)[:, CHANNELS]  # m[i, j]: image i, channel j
    own = m.diag()
    natural = channel_means(model, photos(model, size), stage)[:, CHANNELS].max(dim=0).values
    assert (own > 0).all()
    assert (own > natural).all(), f"own {own.tolist()} vs best natural photo {natural.tolist()}"
    others = m.masked_fill(torch.eye(k, dtype=torch.bool), -math.inf).max(dim=0).values
    assert (own > others).all(), f"own {own.tolist()} vs other channels' images {others.tolist()}"
    # the objective rose from the start (every channel is live at the first spread there)
    assert result.settings["start_spread"] == [1.0] * k
    start = channel_means(model, noise_start(model, CHANNELS, size), stage)[torch.arange(k), CHANNELS]
    assert (own > start).all(), f"own {own.tolist()} vs start {start.tolist()}"


@pytest.mark.parametrize("name, stage, size", FILTER_CASES)
def test_filter_negate_lowers_channel_below_start(float32_models, filter_runs, name, stage, size):
    model = float32_models[name]
    result = filter_runs(name, stage, size, True)
    assert result.settings["start_spread"] == [1.0] * len(CHANNELS)
    start = channel_means(model, noise_start(model, CHANNELS, size), stage)[
        torch.arange(len(CHANNELS)), CHANNELS
    ]
    assert (start > 0).all()
    got = channel_means(model, result.images, stage)[torch.arange(len(CHANNELS)), CHANNELS]
    assert (got < start).all(), f"after {got.tolist()} vs start {start.tolist()}"


@pytest.mark.parametrize("param", ["pixels", "fourier"])
def test_every_channel_image_beats_natural_photos(alex, param):
    """The first 16 channels of AlexNet stage 2 at 64 px, none left out: each channel that natural
    photos excite must be excited more by its own image. Channels that are exactly 0 on the
    method's start (channel 13 with grey noise, channel 7 with the Fourier start) get no gradient
    through the ReLU, yet natural photos excite them."""
    size, stage, channels = 64, 2, list(range(16))
    result = deconvnet.visualize_filters(
        alex, stage, channels, size=size, steps=FILTER_STEPS, param=param, details=True
    )
    own = channel_means(alex, result.images, stage)[torch.arange(16), channels]
    natural = channel_means(alex, photos(alex, size), stage)[:, channels].max(dim=0).values
    beaten = [c for c in channels if natural[c] > 0 and not own[c] > natural[c]]
    assert not beaten, (
        f"channels {beaten}: own image {own[beaten].tolist()} vs natural photos "
        f"{natural[beaten].tolist()}; objective at the start "
        f"{result.history[0, beaten].tolist()}"
    )


# VGG16 stage 1 at 48 px: a batch of 4 runs its first layers in pieces (the engine's CPU budget)
BATCH_CASES = [("vgg16", 1, 48, 4), ("alexnet", 2, 63, 12)]


@pytest.mark.parametrize("name, stage, size, steps", BATCH_CASES)
def test_filters_same_alone_or_in_any_batch(vgg64, alex64, name, stage, size, steps):
    model = vgg64 if name == "vgg16" else alex64
    channels = [1, 5, 9, 2]
    together = deconvnet.visualize_filters(model, stage, channels, size=size, steps=steps)
    assert together.dtype == torch.float64
    for batch_size in (1, 3):
        got = deconvnet.visualize_filters(
            model, stage, channels, size=size, steps=steps, batch_size=batch_size
        )
        torch.testing.assert_close(got, together, rtol=0, atol=F64_ATOL)
    alone = deconvnet.visualize_filters(model, stage, 9, size=size, steps=steps)
    torch.testing.assert_close(alone[0], together[2], rtol=0, atol=F64_ATOL)
    reordered = deconvnet.visualize_filters(model, stage, [9, 2, 5, 1], size=size, steps=steps)
    torch.testing.assert_close(reordered, together[[2, 3, 1, 0]], rtol=0, atol=F64_ATOL)


def test_filters_fourier_valid_colours_and_rising(alex):
    size, stage, channels = 64, 2, [0, 3, 5]  # (7 is 0 on its start: see the test above)
    result = deconvnet.visualize_filters(
        alex, stage, channels, size=size, steps=12, param="fourier", details=True
    )
    assert result.images.shape == (3, 3, size, size)
    assert result.settings["param"] == "fourier"
    assert in_valid_range(alex, result.images)
    got = channel_means(alex, result.images, stage)[torch.arange(3), channels]
    start = channel_means(alex, fourier_start(alex, channels, size), stage)[torch.arange(3), channels]
    assert (got > start).all() and (got > 0).all(), f"after {got.tolist()} vs start {start.tolist()}"
    assert result.images.flatten(1).std(dim=1).min() > 0  # not a flat colour


def test_filters_border_left_out_of_objective(vgg):
    """history[n] of an (n + 1)-step run is the objective of the n-step run's images: it must be
    the channel mean without the border, computed here, and not the mean with it."""
    size, stage, border, channels, n = 32, 2, 2, [0, 5], 3
    short = deconvnet.visualize_filters(vgg, stage, channels, size=size, steps=n, border=border)
    longer = deconvnet.visualize_filters(
        vgg, stage, channels, size=size, steps=n + 1, border=border, details=True
    )
    assert longer.history.shape == (n + 1, 2)
    inner = channel_means(vgg, short, stage, border=border)[torch.arange(2), channels]
    whole = channel_means(vgg, short, stage)[torch.arange(2), channels]
    torch.testing.assert_close(longer.history[n], inner, rtol=1e-5, atol=1e-7)
    assert ((inner - whole).abs() > 1e-3 * inner.abs()).all()  # the border does matter here


# ----------------------------------------------------------------------------- visualize_units

# (model, stage, size, position): each crop smaller than the image
UNIT_CASES = [
    ("vgg16", 2, 32, None),
    ("vgg16", 3, 40, (0, 0)),
    ("alexnet", 1, 63, None),
    ("alexnet", 2, 63, (0, 0)),
]


@pytest.mark.parametrize("name, stage, size, position", UNIT_CASES)
def test_units_crop_equals_full_image_run(vgg64, alex64, name, stage, size, position):
    model = vgg64 if name == "vgg16" else alex64
    # 0, 2: live on their start; on VGG16 stage 2 at 32 px 3 and 8 are 0 on every noise start and
    # are woken on the pre-ReLU map first (`starts.wake`), which must take the same steps either way
    channels = [0, 2, 3, 8]
    kw = dict(size=size, steps=4, position=position, details=True)
    cropped = deconvnet.visualize_units(model, stage, channels, crop=True, **kw)
    full = deconvnet.visualize_units(model, stage, channels, crop=False, **kw)
    top, left, bottom, right = cropped.settings["crop_box"]
    assert (bottom - top) * (right - left) < size * size, "the case must crop"
    box = cropped.settings["box"]
    assert isinstance(cropped, Optimized) and cropped.history.shape == (4, 4)
    assert cropped.images.shape == (4, 3, box[2] - box[0], box[3] - box[1])
    assert cropped.settings["wake_steps"] == full.settings["wake_steps"]
    if (name, stage, size) == ("vgg16", 2, 32):
        assert max(cropped.settings["wake_steps"]) > 0, "the case must wake a unit"
    torch.testing.assert_close(cropped.images, full.images, rtol=0, atol=F64_ATOL)
    torch.testing.assert_close(cropped.history, full.history, rtol=0, atol=F64_ATOL)
    # the unit rose: its value on the result (placed in any background) exceeds its start
    y, x = cropped.settings["position"]
    a = stage_maps(model, embed(cropped.images, box, size, torch.float64), stage)
    value = a[torch.arange(4), channels, y, x]
    assert cropped.settings["start_spread"] == [1.0] * 4
    start = stage_maps(model, noise_start(model, channels, size), stage)[torch.arange(4), channels, y, x]
    assert (value > start).all()  # a woken unit (0 on its noise start) rose from 0


def test_units_negate_lowers_unit(alex64):
    size, stage, channels = 63, 1, [0, 3]
    result = deconvnet.visualize_units(alex64, stage, channels, size=size, steps=6, negate=True, details=True)
    y, x = result.settings["position"]
    a = stage_maps(alex64, embed(result.images, result.settings["box"], size, torch.float64), stage)
    assert result.settings["start_spread"] == [1.0] * 2 and result.settings["wake_steps"] == [0, 0]
    start = stage_maps(alex64, noise_start(alex64, channels, size), stage)[torch.arange(2), channels, y, x]
    assert (start > 0).all()
    assert (a[torch.arange(2), channels, y, x] < start).all()


def test_every_unit_image_beats_natural_photos(vgg):
    """The centre unit of the first 16 channels of VGG16 stage 2 at 32 px, none left out: each
    unit that natural photos excite must be excited more by its own image. 8 of them are
    exactly 0 on the grey-noise start (no gradient through the ReLU); natural photos excite 4 of
    those (channels 3, 8, 11, 14)."""
    size, stage, channels = 32, 2, list(range(16))
    result = deconvnet.visualize_units(vgg, stage, channels, size=size, steps=8, details=True)
    y, x = result.settings["position"]
    a = stage_maps(vgg, embed(result.images, result.settings["box"], size, torch.float32), stage)
    own = a[torch.arange(16), channels, y, x]
    natural = stage_maps(vgg, photos(vgg, size), stage)[:, channels, y, x].max(dim=0).values
    assert (natural > 0).sum() >= 8
    beaten = [c for c in channels if natural[c] > 0 and not own[c] > natural[c]]
    assert not beaten, (
        f"channels {beaten}: own image {own[beaten].tolist()} vs natural photos "
        f"{natural[beaten].tolist()}; unit at the start "
        f"{result.history[0, beaten].tolist()}"
    )


CROP_CASES = [("vgg16", 2, 32), ("vgg16", 3, 40), ("alexnet", 1, 63), ("alexnet", 2, 63), ("alexnet", 3, 70)]


@pytest.mark.parametrize("name, stage, size", CROP_CASES)
def test_unit_crop_boxes_and_exact_values(vgg64, alex64, name, stage, size):
    model = vgg64 if name == "vgg16" else alex64
    rf = deconvnet.receptive_field(model, stage)
    jy, jx = rf.jump
    x = torch.randn(
        1, 3, size, size, generator=torch.Generator().manual_seed(size + stage), dtype=torch.float64
    )
    full = stage_maps(model, x, stage)[0]  # [C, h, w]
    h, w = full.shape[1:]
    groups: dict = {}  # crops of one shape run as one batch
    for y in range(h):
        for xx in range(w):
            where = unit_crop(model, stage, size, y, xx)
            t, l, b, r = rf.box(y, xx)
            assert where.box == (max(t, 0), max(l, 0), min(b, size), min(r, size))
            ct, cl, cb, cr = where.crop
            assert ct % jy == 0 and cl % jx == 0, "crop on the stride grid"
            assert ct <= where.box[0] and cl <= where.box[1]
            assert (cb, cr) == (where.box[2], where.box[3])
            assert where.position == (y - ct // jy, xx - cl // jx)
            groups.setdefault((cb - ct, cr - cl), []).append((where, y, xx))
    assert sum(map(len, groups.values())) == h * w
    for items in groups.values():
        crops = torch.cat([x[:, :, c.crop[0] : c.crop[2], c.crop[1] : c.crop[3]] for c, _, _ in items])
        maps = stage_maps(model, crops, stage)
        for i, (where, y, xx) in enumerate(items):
            py, px = where.position
            torch.testing.assert_close(maps[i, :, py, px], full[:, y, xx], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- class_model

CLASSES = [1, 500, 999]


def test_class_model_classified_alexnet(alex):
    # The defaults (100 steps, l2) hold at 96 px for classes 0, 1, 281, 500, 999; 50 steps are
    # enough there, 30 are not (1 -> 932). At 63-80 px classes 1 and 999 lose to 932 / 18 even
    # after 200 steps: the raw logit is maximised, not its margin over the other classes.
    result = deconvnet.class_model(alex, CLASSES, size=96, steps=50, details=True)
    k = len(CLASSES)
    assert result.images.shape == (k, 3, 96, 96)
    assert result.history.shape == (50, k)
    out = logits(alex, result.images)
    assert out.argmax(dim=1).tolist() == CLASSES
    start = logits(alex, torch.zeros(1, 3, 96, 96))[0, CLASSES]
    assert (out[torch.arange(k), CLASSES] > start).all()


def test_class_model_classified_vgg16(vgg):
    """Random VGG16 has zero conv biases, so every activation of the all-zero start is 0: the
    class model must still move off it and reach its class (30 steps at 32 px: what a small
    noise start reaches with the same steps, l2 weight and lr)."""
    classes, size = [1], 32
    quick = deconvnet.class_model(vgg, classes, size=size, steps=2, details=True)
    assert quick.images.abs().max() > 0, (
        f"the class model never left the all-zero start (history {quick.history.tolist()})"
    )
    result = deconvnet.class_model(vgg, classes, size=size, steps=30)
    out = logits(vgg, result)
    start = logits(vgg, torch.zeros(1, 3, size, size))[0, classes]
    assert (out[0, classes] > start).all()
    assert out.argmax(dim=1).tolist() == classes


@pytest.fixture(scope="module")
def class_runs(alex):
    """Class 281 at 64 px, 10 steps, with each regulariser and negated (l2)."""
    kw = dict(classes=[281], size=64, steps=10)
    runs = {reg: deconvnet.class_model(alex, regularizer=reg, **kw) for reg in ("l2", "l1", "none")}
    runs["negate"] = deconvnet.class_model(alex, negate=True, **kw)
    return runs


def test_class_model_l2_shrinks_image(class_runs):
    assert class_runs["l2"].norm() < class_runs["none"].norm()


def test_class_model_l1_makes_exact_zeros(class_runs):
    zeros = {reg: int((class_runs[reg] == 0).sum()) for reg in ("l1", "l2", "none")}
    assert zeros["l1"] > zeros["l2"] and zeros["l1"] > zeros["none"], zeros


def test_class_model_negate_lowers_score(alex, class_runs):
    runs = class_runs
    start = logits(alex, torch.zeros(1, 3, 64, 64))[0, 281]
    assert logits(alex, runs["negate"])[0, 281] < start < logits(alex, runs["l2"])[0, 281]


# ----------------------------------------------------------------------------- fooling_image


def test_fooling_reaches_confidence(hot_alex, fooled):
    image = photo(hot_alex, 64)
    result = fooled
    assert isinstance(result, Optimized) and result.stopped == "stop"
    x = result.images
    assert x.shape == image.shape
    p = torch.softmax(logits(hot_alex, x), dim=1)[0]
    p0 = torch.softmax(logits(hot_alex, image), dim=1)[0]
    assert p[FOOL["target"]] >= 0.99 and p0[FOOL["target"]] < 0.01
    assert in_valid_range(hot_alex, x)
    report = result.report
    assert report["reached"] is True
    delta = x - image
    std = torch.tensor(deconvnet.preprocessing(hot_alex).std).view(1, 3, 1, 1)
    assert report["linf"] == pytest.approx(float(delta.abs().max()), rel=1e-6)
    assert report["l2"] == pytest.approx(float(delta.norm()), rel=1e-6)
    assert report["linf_colour"] == pytest.approx(float((delta * std).abs().max()), rel=1e-6)
    assert report["l2_colour"] == pytest.approx(float((delta * std).norm()), rel=1e-6)
    assert report["probability_after"] == pytest.approx(float(p[FOOL["target"]]), rel=1e-5)
    assert report["probability_before"] == pytest.approx(float(p0[FOOL["target"]]), rel=1e-5)
    assert report["predicted_after"] == int(p.argmax()) == FOOL["target"]
    assert report["predicted_before"] == int(p0.argmax())
    assert report["steps_taken"] <= FOOL["steps"]


def test_fooling_too_few_steps_warns(hot_alex):
    image = photo(hot_alex, 64)
    with pytest.warns(UserWarning, match="steps"):
        result = deconvnet.fooling_image(
            hot_alex, image, FOOL["target"], steps=2, lr=FOOL["lr"], details=True, **OLD_RULE
        )
    assert result.report["reached"] is False
    p = torch.softmax(logits(hot_alex, result.images), dim=1)[0, FOOL["target"]]
    assert p < 0.99
    assert in_valid_range(hot_alex, result.images)


def test_fooling_steps_is_the_number_of_steps(hot_alex):
    """steps=1: exactly one L2-normalised ascent step on log softmax(target), then the clamp."""
    image = photo(hot_alex, 64)
    low, high = valid_range(deconvnet.preprocessing(hot_alex), image.dtype, image.device)
    x0 = image.clamp(low, high).requires_grad_(True)
    (g,) = torch.autograd.grad(torch.log_softmax(hot_alex(x0), dim=1)[0, FOOL["target"]], x0)
    lr = FOOL["lr"]
    one_step = (x0 + lr * math.sqrt(x0.numel()) * g / g.norm()).clamp(low, high).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = deconvnet.fooling_image(hot_alex, image, FOOL["target"], steps=1, lr=lr, **OLD_RULE)
    torch.testing.assert_close(got, one_step, rtol=1e-5, atol=1e-5)


def test_fooling_report_agrees_with_its_image(hot_alex, fooled):
    """One step fewer than the run needed: `reached`, the warning and the probability of the
    returned image must tell the same story."""
    image = photo(hot_alex, 64)
    steps = fooled.report["steps_taken"] - 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = deconvnet.fooling_image(
            hot_alex, image, FOOL["target"], steps=steps, lr=FOOL["lr"], details=True, **OLD_RULE
        )
    p = float(torch.softmax(logits(hot_alex, result.images), dim=1)[0, FOOL["target"]])
    reached = p >= 0.99
    assert result.report["reached"] is reached, (
        f"steps={steps}: report reached={result.report['reached']} but the returned image has "
        f"p={p:.4f}; warnings: {[str(w.message) for w in caught]}"
    )
    assert bool(caught) is (not reached)
    assert result.report["steps_taken"] <= steps


# ----------------------------------------------------------------------------- invert


def test_invert_matches_features(alex):
    size, stage = 64, 1
    image = photo(alex, size)
    result = deconvnet.invert(alex, image, stage, steps=60, lr=0.1, details=True)
    assert result.images.shape == image.shape
    assert result.history.shape == (60, 1)

    def error(x):
        phi, phi0 = stage_maps(alex, x, stage), stage_maps(alex, image, stage)
        return float((phi - phi0).pow(2).sum() / phi0.pow(2).sum())

    got, noise = error(result.images), error(grey_noise(alex, size))
    assert result.report["feature_error"] == pytest.approx(got, rel=1e-5)
    assert got < FEATURE_ERROR_BOUND, got
    assert got < 0.4 * noise, (got, noise)


# ----------------------------------------------------------------------------- deep_dream

DREAM_CASES = [("alexnet", 1, 64), ("alexnet", 2, 64), ("vgg16", 2, 32)]


@pytest.mark.parametrize("name, stage, size", DREAM_CASES)
def test_deep_dream_energy(float32_models, name, stage, size):
    model = float32_models[name]
    image = photo(model, size)
    kw = dict(octaves=2, steps=5)
    result = deconvnet.deep_dream(model, image, stage, details=True, **kw)
    assert result.images.shape == image.shape
    assert result.history.shape == (10, 1)
    assert in_valid_range(model, result.images)
    e0 = energy(model, image, stage)
    assert energy(model, result.images, stage) > e0
    low = deconvnet.deep_dream(model, image, stage, negate=True, **kw)
    assert in_valid_range(model, low)
    assert energy(model, low, stage) < e0
    channel = 3
    one = deconvnet.deep_dream(model, image, stage, channel=channel, **kw)
    assert in_valid_range(model, one)
    assert energy(model, one, stage, channel) > energy(model, image, stage, channel)


def test_deep_dream_too_many_octaves(alex):
    # 64 px / 1.4^5 = 12 px < 15 px, the least AlexNet stage 1 needs
    with pytest.raises(ValueError, match="^octaves"):
        deconvnet.deep_dream(alex, photo(alex, 64), 1, octaves=6)
    deconvnet.deep_dream(alex, photo(alex, 64), 1, octaves=5, steps=1)  # 17 px: fine


# ------------------------------------------------------------------- seeds, model left alone


def _quiet_fooling(model, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return deconvnet.fooling_image(model, photo(model, 64), 500, steps=3, seed=seed)


RUNNERS = {
    "visualize_filters": lambda m, seed: deconvnet.visualize_filters(
        m, 2, [0, 3], size=64, steps=3, seed=seed
    ),
    "visualize_units": lambda m, seed: deconvnet.visualize_units(m, 2, [0, 3], size=64, steps=3, seed=seed),
    "class_model": lambda m, seed: deconvnet.class_model(m, 1, size=63, steps=3, param="fourier", seed=seed),
    "class_model_jitter": lambda m, seed: deconvnet.class_model(
        m, 1, size=63, steps=3, transforms=[Jitter(4)], seed=seed
    ),
    "deep_dream": lambda m, seed: deconvnet.deep_dream(m, photo(m, 64), 1, octaves=2, steps=2, seed=seed),
    "invert": lambda m, seed: deconvnet.invert(m, photo(m, 64), 2, steps=3, seed=seed),
    "fooling_image": _quiet_fooling,
}
RANDOMISED = set(RUNNERS) - {"fooling_image"}  # fooling starts at the image, no random draws


def _snapshot(model):
    hooks = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    )
    return {
        "values": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {k: p.grad is None for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "inplace": {k: m.inplace for k, m in model.named_modules() if isinstance(m, nn.ReLU)},
        "hooks": {k: sum(len(getattr(m, h, {})) for h in hooks) for k, m in model.named_modules()},
        "global": (
            len(nn.modules.module._global_forward_hooks),
            len(nn.modules.module._global_forward_pre_hooks),
            len(nn.modules.module._global_backward_hooks),
        ),
    }


@pytest.fixture(scope="module")
def twisted_alex(alexnet_float32):
    """A caller's AlexNet in training mode with the first convolution frozen."""
    model = copy.deepcopy(alexnet_float32).train()
    model.features[0].weight.requires_grad_(False)
    model.features[0].bias.requires_grad_(False)
    return model


@pytest.mark.parametrize("method", sorted(RUNNERS))
def test_seeded_runs_repeat_and_model_left_alone(twisted_alex, method):
    """Two runs with seed 0 are bit-identical, seed 1 differs where the method draws random
    numbers, and the caller's model (training mode, first convolution frozen) comes back with the
    same values, flags, gradients and no hooks."""
    before = _snapshot(twisted_alex)
    run = RUNNERS[method]
    first, again = run(twisted_alex, 0), run(twisted_alex, 0)
    assert torch.equal(first, again)
    if method in RANDOMISED:
        assert not torch.equal(first, run(twisted_alex, 1))
    after = _snapshot(twisted_alex)
    for key in before["values"]:
        assert torch.equal(before["values"][key], after["values"][key]), key
        assert before["values"][key].dtype == after["values"][key].dtype, key
    for part in ("ids", "requires_grad", "grad", "training", "inplace", "hooks", "global"):
        assert before[part] == after[part], part


# ----------------------------------------------------------------------------- bad input


# Each message starts with the name of the input it rejects.


def _img(model, size=64, batch=1):
    return photo(model, size).expand(batch, -1, -1, -1).contiguous()


BAD = [
    # unknown stage
    ("filters-stage0", lambda a, v: deconvnet.visualize_filters(a, 0, 0, size=64), "^stage"),
    ("filters-stage6", lambda a, v: deconvnet.visualize_filters(a, 6, 0, size=64), "^stage"),
    ("units-stage0", lambda a, v: deconvnet.visualize_units(a, 0, 0, size=64), "^stage"),
    ("units-stage6", lambda a, v: deconvnet.visualize_units(a, 6, 0, size=64), "^stage"),
    ("dream-stage0", lambda a, v: deconvnet.deep_dream(a, _img(a), 0), "^stage"),
    ("dream-stage6", lambda a, v: deconvnet.deep_dream(a, _img(a), 6), "^stage"),
    ("invert-stage0", lambda a, v: deconvnet.invert(a, _img(a), 0), "^stage"),
    ("invert-stage6", lambda a, v: deconvnet.invert(a, _img(a), 6), "^stage"),
    # channel out of range (AlexNet stage 2 has 192)
    ("filters-channel192", lambda a, v: deconvnet.visualize_filters(a, 2, [0, 192], size=64), "^channel"),
    ("filters-channel-1", lambda a, v: deconvnet.visualize_filters(a, 2, -1, size=64), "^channel"),
    ("units-channel192", lambda a, v: deconvnet.visualize_units(a, 2, 192, size=64), "^channel"),
    ("dream-channel192", lambda a, v: deconvnet.deep_dream(a, _img(a), 2, channel=192), "^channel"),
    # class out of range
    ("class-1000", lambda a, v: deconvnet.class_model(a, 1000, size=64), "^class"),
    ("class--1", lambda a, v: deconvnet.class_model(a, [1, -1], size=64), "^class"),
    ("fooling-target1000", lambda a, v: deconvnet.fooling_image(a, _img(a), 1000), "^target"),
    ("fooling-target-1", lambda a, v: deconvnet.fooling_image(a, _img(a), -1), "^target"),
    # steps < 1
    ("filters-steps0", lambda a, v: deconvnet.visualize_filters(a, 2, 0, size=64, steps=0), "^steps"),
    ("units-steps0", lambda a, v: deconvnet.visualize_units(a, 2, 0, size=64, steps=0), "^steps"),
    ("class-steps0", lambda a, v: deconvnet.class_model(a, 1, size=64, steps=0), "^steps"),
    ("dream-steps0", lambda a, v: deconvnet.deep_dream(a, _img(a), 1, octaves=1, steps=0), "^steps"),
    ("invert-steps0", lambda a, v: deconvnet.invert(a, _img(a), 1, steps=0), "^steps"),
    ("fooling-steps0", lambda a, v: deconvnet.fooling_image(a, _img(a), 1, steps=0), "^steps"),
    # size below the model's minimum
    (
        "filters-size",
        lambda a, v: deconvnet.visualize_filters(v, 2, 0, size=deconvnet.min_input_size(v, 2) - 1),
        "^size",
    ),
    (
        "units-size",
        lambda a, v: deconvnet.visualize_units(a, 2, 0, size=deconvnet.min_input_size(a, 2) - 1),
        "^size",
    ),
    (
        "class-size-alexnet",
        lambda a, v: deconvnet.class_model(a, 1, size=deconvnet.min_input_size(a) - 1),
        "^size",
    ),
    (
        "class-size-vgg",
        lambda a, v: deconvnet.class_model(v, 1, size=deconvnet.min_input_size(v) - 1),
        "^size",
    ),
    # deep_dream and invert need only the model up to the stage
    (
        "dream-image-size",
        lambda a, v: deconvnet.deep_dream(v, _img(v, deconvnet.min_input_size(v, 2) - 1), 2, octaves=1),
        "^image",
    ),
    (
        "invert-image-size",
        lambda a, v: deconvnet.invert(a, _img(a, deconvnet.min_input_size(a, 3) - 1), 3),
        "^image",
    ),
    (
        "invert-image-size-fc6",
        lambda a, v: deconvnet.invert(a, _img(a, deconvnet.min_input_size(a) - 1), "fc6"),
        "^image",
    ),
    (
        "fooling-image-size",
        lambda a, v: deconvnet.fooling_image(a, _img(a, deconvnet.min_input_size(a) - 1), 1),
        "^image",
    ),
    # confidence outside (0, 1)
    ("confidence0", lambda a, v: deconvnet.fooling_image(a, _img(a), 1, confidence=0), "^confidence"),
    ("confidence1", lambda a, v: deconvnet.fooling_image(a, _img(a), 1, confidence=1), "^confidence"),
    ("confidence1.5", lambda a, v: deconvnet.fooling_image(a, _img(a), 1, confidence=1.5), "^confidence"),
    # unknown regulariser, parameterisation
    (
        "class-regularizer",
        lambda a, v: deconvnet.class_model(a, 1, size=64, regularizer="l3"),
        "^regularizer",
    ),
    (
        "filters-regularizers",
        lambda a, v: deconvnet.visualize_filters(a, 2, 0, size=64, regularizers="bogus"),
        "^regularizers",
    ),
    ("filters-param", lambda a, v: deconvnet.visualize_filters(a, 2, 0, size=64, param="bogus"), "^param"),
    ("class-param", lambda a, v: deconvnet.class_model(a, 1, size=64, param="bogus"), "^param"),
    # border too large: VGG stage 2 at 32 px is an 8x8 map
    ("border4", lambda a, v: deconvnet.visualize_filters(v, 2, 0, size=32, border=4), "^border"),
    ("border-1", lambda a, v: deconvnet.visualize_filters(v, 2, 0, size=32, border=-1), "^border"),
    # a batch of two images
    ("dream-batch2", lambda a, v: deconvnet.deep_dream(a, _img(a, batch=2), 1), "^image"),
    ("invert-batch2", lambda a, v: deconvnet.invert(a, _img(a, batch=2), 1), "^image"),
    ("fooling-batch2", lambda a, v: deconvnet.fooling_image(a, _img(a, batch=2), 1), "^image"),
]


@pytest.mark.parametrize("call, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(alex, vgg, call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            call(alex, vgg)
