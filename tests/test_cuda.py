"""The CUDA path: the same results on the GPU as on the CPU.

Runs only where CUDA is available (skipped, and reported as skipped, elsewhere: CI has no GPU).
Seeded random weights. Reconstructions and scans compare float64 models on both devices: in float32
a 1e-7 difference between the devices' convolutions can flip a near-tie of a max-pooling window or a
ReLU sign on random weights, which moves a whole switch; in float64 both devices agree to round-off.
Fig. 2 runs in float32, as users run it, and must match the CPU run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_ATLAS

import deconvnet
from deconvnet.analysis.scan import scan_topk
from deconvnet.gradient.methods import CLASS_ONLY_METHODS, options_for
from deconvnet.jobs.atlas import record_path, run_atlas
from deconvnet.jobs.fig2 import load_fig2, run_fig2

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.fixture(scope="module")
def models():
    cpu = deconvnet.load_model("vgg16", weights="random", seed=0).double()
    gpu = deconvnet.load_model("vgg16", weights="random", seed=0, device="cuda").double()
    return cpu, gpu


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(a.abs().max())
    assert float((a - b.cpu()).abs().max()) <= 1e-9 * max(scale, 1e-12)


@pytest.mark.parametrize("rule", ["deconvnet", "backprop", "guided"])
@pytest.mark.parametrize("stage", [1, 3, 5])
def test_reconstruct_on_cuda_equals_cpu(models, rule, stage):
    cpu, gpu = models
    x = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(stage)).double()
    for keep in ("all", "max", 3):
        want = deconvnet.reconstruct(cpu, x, stage, keep=keep, rule=rule)
        got = deconvnet.reconstruct(gpu, x.cuda(), stage, keep=keep, rule=rule)
        assert got.device.type == "cuda"
        _close(want, got)
    channels = [0, 5, 5, 9]
    _close(
        deconvnet.reconstruct(cpu, x[:1], stage, keep=channels, rule=rule),
        deconvnet.reconstruct(gpu, x[:1].cuda(), stage, keep=channels, rule=rule),
    )


def test_scan_on_cuda_equals_cpu(models):
    cpu, gpu = models
    images = torch.randn(10, 3, 48, 48, generator=torch.Generator().manual_seed(1)).double()
    batches = [images[:4], images[4:7], images[7:]]
    want = scan_topk(cpu, batches, k=3, progress=False)
    got = scan_topk(gpu, [b.cuda() for b in batches], k=3, progress=False)
    for s in want:
        torch.testing.assert_close(got[s].values.cpu(), want[s].values, rtol=1e-9, atol=1e-12)
        assert torch.equal(got[s].image.cpu(), want[s].image)


def test_fig2_on_cuda_equals_cpu(tmp_path):
    settings = dict(
        model="alexnet",
        weights="random",
        stages=[1, 3],
        channels_per_stage=3,
        k=3,
        data={"kind": "samples", "size": 80, "limit": 12},
        rules=["deconvnet", "guided"],
        progress=False,
    )
    run_fig2(tmp_path / "cpu", device="cpu", **settings)
    run_fig2(tmp_path / "gpu", device="cuda", **settings)
    (_, cpu), (_, gpu) = load_fig2(tmp_path / "cpu"), load_fig2(tmp_path / "gpu")
    for s in (1, 3):
        assert np.array_equal(cpu[s]["image"], gpu[s]["image"])
        for rule in ("deconvnet", "guided"):
            want, got = cpu[s]["recon"][rule], gpu[s]["recon"][rule]
            assert np.abs(want - got).max() <= 1e-4 * max(np.abs(want).max(), 1e-12)


def test_atlas_on_cuda_equals_cpu(tmp_path):
    """The same channels, top-k and firing counts on both devices; the pages build on the GPU."""
    cpu = run_atlas(tmp_path / "cpu", device="cpu", **TINY_ATLAS)
    gpu = run_atlas(tmp_path / "gpu", device="cuda", **TINY_ATLAS)
    assert cpu["channels"] == gpu["channels"] and gpu["status"] == "complete"
    for s, channels in cpu["channels"].items():
        for c in channels:
            a = json.loads(record_path(tmp_path / "cpu", int(s), c).read_text())
            b = json.loads(record_path(tmp_path / "gpu", int(s), c).read_text())
            assert [e["image_index"] for e in a["top"]] == [e["image_index"] for e in b["top"]]
            assert [e["value"] for e in a["top"]] == pytest.approx(
                [e["value"] for e in b["top"]], rel=1e-4, abs=1e-6
            )
            assert a["firing"]["fires"] == b["firing"]["fires"]


@pytest.mark.parametrize("method", sorted(deconvnet.METHODS))
def test_gradient_family_on_cuda_equals_cpu(models, method):
    cpu, gpu = models
    x = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(7)).double()
    options = options_for(method, {"samples": 3, "steps": 4, "batch_size": 2, "stage": 4})
    units = () if method in CLASS_ONLY_METHODS else (deconvnet.Unit(4, 5),)
    for target in (None, torch.tensor([3, 11]), *units):
        want = deconvnet.explain(cpu, x, method, target, **options)
        got = deconvnet.explain(gpu, x.cuda(), method, target, **options)
        assert got.device.type == "cuda"
        _close(want, got)
    _close(
        deconvnet.explain(cpu, x[:1], method, [1, 2, 3], **options),
        deconvnet.explain(gpu, x[:1].cuda(), method, [1, 2, 3], **options),
    )


# ------------------------------------------------------------------------ optimisation family


OPTIM_CALLS = {
    "visualize_filters": lambda m, x: deconvnet.visualize_filters(m, 3, [0, 5], size=48, steps=3),
    "visualize_filters_fourier": lambda m, x: deconvnet.visualize_filters(
        m, 2, [1, 2], size=48, steps=3, param="fourier"
    ),
    "visualize_units": lambda m, x: deconvnet.visualize_units(m, 3, [1], size=64, steps=3),
    "class_model": lambda m, x: deconvnet.class_model(m, [1, 7], size=48, steps=3),
    "deep_dream": lambda m, x: deconvnet.deep_dream(m, x, 2, octaves=2, steps=2),
    "invert": lambda m, x: deconvnet.invert(m, x, 2, steps=3),
    "fooling_image": lambda m, x: deconvnet.fooling_image(m, x, 3, steps=3),
}


@pytest.mark.filterwarnings("ignore:fooling_image")
@pytest.mark.parametrize("method", sorted(OPTIM_CALLS))
def test_optimisation_family_on_cuda_equals_cpu(models, method):
    """Every method on the GPU gives the CPU's images (float64: a few steps agree to round-off;
    the random draws come from CPU generators on both devices)."""
    cpu, gpu = models
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).double()
    on_cpu = OPTIM_CALLS[method](cpu, x)
    on_gpu = OPTIM_CALLS[method](gpu, x.cuda())
    assert on_gpu.device.type == "cuda"
    scale = float(on_cpu.abs().max())
    assert float((on_cpu - on_gpu.cpu()).abs().max()) <= 1e-7 * max(scale, 1e-12)
