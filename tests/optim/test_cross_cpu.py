"""The optimisation family in float64 gives the same images whatever kernels the CPU runs.

A gradient ascent amplifies rounding: in float32 a class model made with SSE4.1 kernels differs
from one made with AVX-512 kernels in most pixels (measured on this project's machine at 224 px,
100 steps: a largest difference of 2.8 on values of at most 2.4), and a fooling image's sign steps
flip. In float64 the same runs agree to 6e-15. That is why the committed optimisation figures
run with `dtype=float64` (docs/reproducibility.md#optimised-images). Here both are made on
EfficientNet-Lite0 with its ImageNet weights in two processes, one with this CPU's own kernels
and one restricted to SSE4.1 (oneDNN and ATen), and compared. Marked slow (two processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# one process: the kernel level ATen chose, then a class model and a fooling image in float64
SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, deconvnet
    from deconvnet.jobs.job import prepare
    from deconvnet.data.images import open_image
    torch.set_num_threads(2)
    net = deconvnet.load_model("efficientnet_lite0", weights="imagenet").double()
    made = deconvnet.class_model(net, [543], size=96, steps=40, seed=0)
    cat = prepare(open_image("cat"), net, 96)
    fooled = deconvnet.fooling_image(net, cat, 368, steps=20, confidence=0.999999)
    torch.save({"class_model": made, "fooling": fooled}, sys.argv[1])
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability()}))
    """
)
SSE41 = {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
KERNEL_KEYS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR")
# float64 rounding (2**-52 ~ 2.2e-16) grown by 100 steps of ascent was measured at 6e-15 of values
# ~3; 1e-9 leaves six orders of margin and is still ~8 orders below float32's differences
BOUND = 1e-9


def _run(out: Path, extra: dict[str, str]) -> tuple[dict[str, torch.Tensor], str]:
    """The script's tensors and its kernel level, run with this environment plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_KEYS} | extra
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out), json.loads(done.stdout.strip().splitlines()[-1])["capability"]


@pytest.mark.slow
def test_float64_class_model_and_fooling_equal_with_sse41_kernels(tmp_path):
    native, level = _run(tmp_path / "native.pt", {})
    if level == "DEFAULT":
        pytest.skip("this CPU runs ATen's default kernels already: nothing to compare against")
    sse, sse_level = _run(tmp_path / "sse41.pt", SSE41)
    assert sse_level == "DEFAULT"  # the restriction took effect
    for name in ("class_model", "fooling"):
        a, b = native[name], sse[name]
        assert a.dtype == b.dtype == torch.float64
        assert (a - b).abs().max() <= BOUND * a.abs().max(), name
