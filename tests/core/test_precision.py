"""`full_float32`: TF32 off inside, the caller's settings back afterwards (also after an error)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from conftest import ConvolutionRecorder, seeded_randn
from torch import nn

import deconvnet
from deconvnet.core.precision import full_float32
from deconvnet.optim.objectives import channel
from deconvnet.optim.params import PixelImage


@pytest.fixture
def tf32_on():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_off_inside_and_restored_after_an_error(tf32_on):
    with pytest.raises(RuntimeError, match="boom"):
        with full_float32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
            raise RuntimeError("boom")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_reconstruct_runs_without_tf32_and_leaves_the_setting(tf32_on, alexnet_float32, monkeypatch):
    seen = []
    original = torch.nn.functional.conv_transpose2d

    def spy(*args, **kwargs):
        seen.append(torch.backends.cudnn.allow_tf32)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", spy)
    x = torch.randn(1, 3, 67, 67, generator=torch.Generator().manual_seed(0))
    deconvnet.reconstruct(alexnet_float32, x, stage=2, keep="max")
    assert seen and not any(seen)
    assert torch.backends.cudnn.allow_tf32


# ---- every public method that runs the model, recorded at its convolutions ----------------

X = seeded_randn((1, 3, 67, 67), 7, torch.float32)
MAP = seeded_randn((1, 67, 67), 8, torch.float32)
CALLS: dict[str, Callable[[nn.Module], object]] = {
    "reconstruct": lambda m: deconvnet.reconstruct(m, X, 3, keep="max"),
    "attribute": lambda m: deconvnet.attribute(m, X, target=3),
    "explain": lambda m: deconvnet.explain(m, X, "guided", target=3),
    "gradcam": lambda m: deconvnet.gradcam(m, X, 3, stage=4),
    "gradcam_plus_plus": lambda m: deconvnet.gradcam_plus_plus(m, X, 3, stage=4),
    "layercam": lambda m: deconvnet.layercam(m, X, 3, stage=4),
    "guided_gradcam": lambda m: deconvnet.guided_gradcam(m, X, 3, stage=4),
    "scorecam": lambda m: deconvnet.scorecam(m, X, 3, stage=5, top=4),
    "smoothgrad": lambda m: deconvnet.smoothgrad(m, X, 3, samples=2),
    "integrated_gradients": lambda m: deconvnet.integrated_gradients(m, X, 3, steps=2),
    "gradient_x_image": lambda m: deconvnet.gradient_x_image(m, X, 3),
    "lrp": lambda m: deconvnet.lrp(m, X, 3),
    "occlusion": lambda m: deconvnet.occlusion(m, X, 3, patch=32, stride=32),
    "invariance": lambda m: deconvnet.invariance(m, X, "rotate", [0, 90], layers=(1, "fc7")),
    "correspondence": lambda m: deconvnet.correspondence(
        m,
        torch.cat([X, X.flip(-1)]),
        {"eye": [(10, 10, 8, 8)] * 2},
        layers=(1,),
        random_draws=1,
        progress=False,
    ),
    "sanity_check": lambda m: deconvnet.sanity_check(
        m, X, ["gradient"], 3, "cascading", ["fc8"], samples=2, steps=2, progress=False
    ),
    "scan_topk": lambda m: deconvnet.scan_topk(m, [X], k=1, stages=(2,), progress=False),
    "deletion": lambda m: deconvnet.deletion(m, X, MAP, 3, steps=2),
    "insertion": lambda m: deconvnet.insertion(m, X, MAP, 3, steps=2),
    "visualize_filters": lambda m: deconvnet.visualize_filters(m, 2, [0], size=67, steps=1),
    "visualize_units": lambda m: deconvnet.visualize_units(m, 2, [0], size=67, steps=1),
    "class_model": lambda m: deconvnet.class_model(m, [3], size=67, steps=1),
    "deep_dream": lambda m: deconvnet.deep_dream(m, X, 2, octaves=1, steps=1, jitter=0),
    "invert": lambda m: deconvnet.invert(m, X, 2, steps=1),
    "fooling_image": lambda m: deconvnet.fooling_image(m, X, 5, steps=1),
    "optimize": lambda m: deconvnet.optimize(m, channel(2, [0]), PixelImage(X.clone()), steps=1, lr=0.05),
}
# exported functions with a `model` argument that run no pass through it: geometry and names
NO_PASSES = {
    "make_mirror",
    "min_input_size",
    "model_name",
    "receptive_field",
    "stage",
    "stages",
    "weights_info",
}


def test_the_table_covers_every_exported_function_taking_a_model():
    """A function exported later with a `model` argument fails here until it is in the table."""
    taking_a_model = {
        name
        for name in deconvnet.__all__
        if inspect.isfunction(getattr(deconvnet, name))
        and "model" in inspect.signature(getattr(deconvnet, name)).parameters
    }
    assert taking_a_model == set(CALLS) | NO_PASSES


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_convolution_of_every_public_method_runs_in_full_float32(name, tf32_on, alexnet_float32):
    """The flags PyTorch sees at each convolution, transposed convolution and linear layer the
    method runs: TF32 off for all of them (on a GPU, cuDNN and cuBLAS would otherwise round
    float32 inputs to 10-bit mantissas), and the caller's setting back afterwards."""
    with ConvolutionRecorder() as recorder:
        CALLS[name](alexnet_float32)
    assert recorder.calls, f"{name} ran no convolution: the recording would prove nothing"
    in_tf32 = [call for call in recorder.calls if call[1] or call[2]]
    assert not in_tf32, f"{name}: {len(in_tf32)} of {len(recorder.calls)} passes allowed TF32"
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("name", sorted(NO_PASSES))
def test_the_functions_said_to_run_no_pass_run_none(name, alexnet_float32):
    """NO_PASSES is true: those functions run no convolution on values of the model."""
    call = {
        "make_mirror": lambda m: deconvnet.make_mirror(m, 3),
        "receptive_field": lambda m: deconvnet.receptive_field(m, 3),
        "min_input_size": lambda m: deconvnet.min_input_size(m, 3),
        "stage": lambda m: deconvnet.stage(m, 3),
    }.get(name, getattr(deconvnet, name))
    with ConvolutionRecorder() as recorder:
        call(alexnet_float32)
    assert not [c for c in recorder.calls if c[0] != "linear"]
