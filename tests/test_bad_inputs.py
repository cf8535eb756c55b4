"""Every argument of every public function is checked (issue 22).

For every callable of `deconvnet.__all__` the table `VALID` holds one small valid call (AlexNet with
random weights at 64 px). From `inspect.signature` and the type hints, every parameter gets the
kinds of bad value that apply to its type (`kinds_for`): a wrong type, None where None is not
accepted, NaN / inf, negative, zero, a bool or a float where an int is needed, an absurdly large
number, an empty sequence, an unknown name, a tensor with NaN, of the wrong rank, empty or as a
list / ndarray. Each bad call must raise ValueError or TypeError naming the parameter, before any
forward pass of the model (forward pre-hooks count them). A value a parameter legitimately takes
is listed in `ACCEPTED` with the reason. A new exported function fails `test_table_covers_all`
until it has a valid call here; its parameters are then tried by default. `BAD_INPUTS` is the
number of bad inputs tried (the README states it).
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

import deconvnet
from deconvnet.optim.objectives import channel as channel_objective
from deconvnet.optim.params import PixelImage

SIDE = 64  # AlexNet's smallest input is 63 px

SKIPPED = {
    "METHODS": "a constant (the method table)",
    "RULES": "a constant (the rule names)",
    "STAGES": "a constant (the stage numbers)",
    "HED_DESCRIPTION": "a constant (a text)",
    "HedWeightsError": "an exception class",
    "WeightsUnavailableError": "an exception class",
    "Correspondence": "a result record that `correspondence` returns",
    "Faithfulness": "a result record that `deletion` / `insertion` return",
    "Invariance": "a result record that `invariance` returns",
    "Occlusion": "a result record that `occlusion` returns",
    "Optimized": "a result record that the optimisation methods return",
    "TopK": "a result record that `scan_topk` returns",
    "ReceptiveField": "a result record that `receptive_field` returns",
    "Stage": "a result record that `stage` / `stages` return",
    "WeightsInfo": "a result record that `weights_info` returns",
    "Seeds": "a record of seed positions that `Mirror` builds from a forward record",
    "NumberedBatch": "a NamedTuple record; `scan_topk` checks the batches it reads",
    "Unit": "a target record, like a class int: every function taking `target` checks its fields "
    "against the model before any work (the `target` kinds below; tests/core/test_targets.py)",
    "Channel": "a target record, like a class int: every function taking `target` checks its fields "
    "against the model before any work (the `target` kinds below; tests/core/test_targets.py)",
}


@dataclass
class Ctx:
    """What the valid calls use: the model, a folder to write to, images and a scan's result."""

    model: nn.Module
    folder: Path

    def images(self, n: int = 1, side: int = SIDE) -> Tensor:
        """[n, 3, side, side] seeded normal values (the normalised input space)."""
        return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(n * side))

    def picture(self) -> Image.Image:
        """A small random RGB picture (40x30)."""
        pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
        return Image.fromarray(pixels)

    def scan(self) -> dict:
        """One small scan's result {1: TopK}."""
        return deconvnet.scan_topk(self.model, [self.images(2)], k=1, stages=(1,), progress=False)


def _unpool_args(c: Ctx) -> dict[str, Any]:
    pooled, switches = F.max_pool2d(c.images(1, 8), 2, return_indices=True)
    return {"pooled": pooled, "switches": switches, "size": (8, 8)}


VALID: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "deletion": lambda c: {
        "model": c.model,
        "images": c.images(),
        "maps": torch.rand(1, SIDE, SIDE, generator=torch.Generator().manual_seed(1)),
        "target": 3,
        "steps": 2,
        "baseline": "zero",
        "batch_size": 3,
    },
    "insertion": lambda c: {
        "model": c.model,
        "images": c.images(),
        "maps": torch.rand(1, SIDE, SIDE, generator=torch.Generator().manual_seed(1)),
        "target": 3,
        "steps": 2,
        "baseline": "zero",
        "batch_size": 3,
    },
    "correspondence": lambda c: {
        "model": c.model,
        "images": c.images(2),
        "boxes": {"eye": [(0, 0, 8, 8), (8, 8, 8, 8)]},
        "layers": [1],
        "random_draws": 1,
        "progress": False,
    },
    "invariance": lambda c: {
        "model": c.model,
        "images": c.images(),
        "values": [0, 2],
        "layers": [1],
        "labels": [3],
        "batch_size": 2,
    },
    "occlusion": lambda c: {
        "model": c.model,
        "images": c.images(),
        "target": 3,
        "patch": 32,
        "stride": 32,
        "batch_size": 4,
    },
    "sanity_check": lambda c: {
        "model": c.model,
        "images": c.images(),
        "methods": ["gradient"],
        "target": 3,
        "modes": ["independent"],
        "layers": ["fc8"],
        "samples": 2,
        "steps": 2,
        "progress": False,
    },
    "class_model": lambda c: {"model": c.model, "classes": [3], "size": SIDE, "steps": 1},
    "deep_dream": lambda c: {
        "model": c.model,
        "image": c.images(),
        "stage": 1,
        "channel": 0,
        "octaves": 1,
        "jitter": 4,
        "steps": 1,
    },
    "fooling_image": lambda c: {"model": c.model, "image": c.images(), "target": 3, "steps": 1},
    "invert": lambda c: {"model": c.model, "image": c.images(), "stage": 1, "steps": 1},
    "optimize": lambda c: {
        "model": c.model,
        "objective": channel_objective(1, 0),
        "param": PixelImage(c.images()),
        "steps": 1,
        "lr": 0.05,
    },
    "visualize_filters": lambda c: {
        "model": c.model,
        "stage": 1,
        "channels": [0],
        "size": SIDE,
        "steps": 1,
        "start": c.images(),
    },
    "visualize_units": lambda c: {
        "model": c.model,
        "stage": 1,
        "channels": [0],
        "size": SIDE,
        "steps": 1,
        "position": (2, 2),
    },
    "attribute": lambda c: {"model": c.model, "images": c.images(), "target": 3, "chunk_size": 4},
    "explain": lambda c: {"model": c.model, "images": c.images(), "method": "gradient", "target": 3},
    "diverging_values": lambda c: {"r": c.images(), "percentile": 99.0},
    "gradcam": lambda c: {"model": c.model, "images": c.images(), "target": 3, "stage": 5, "chunk_size": 4},
    "gradcam_plus_plus": lambda c: {
        "model": c.model,
        "images": c.images(),
        "target": 3,
        "stage": 5,
        "chunk_size": 4,
    },
    "gradient_x_image": lambda c: {"model": c.model, "images": c.images(), "target": 3},
    "guided_gradcam": lambda c: {
        "model": c.model,
        "images": c.images(),
        "target": 3,
        "stage": 5,
        "chunk_size": 4,
    },
    "integrated_gradients": lambda c: {
        "model": c.model,
        "images": c.images(),
        "target": 3,
        "baseline": torch.zeros(1, 3, SIDE, SIDE),
        "steps": 2,
        "batch_size": 2,
        "chunk_size": 4,
    },
    "layercam": lambda c: {"model": c.model, "images": c.images(), "target": 3, "stage": 5, "chunk_size": 4},
    "lrp": lambda c: {"model": c.model, "images": c.images(), "target": 3, "chunk_size": 4},
    "saliency_map": lambda c: {"r": c.images()},
    "scorecam": lambda c: {
        "model": c.model,
        "images": c.images(),
        "target": 3,
        "stage": 5,
        "batch_size": 8,
        "top": 2,
    },
    "smoothgrad": lambda c: {
        "model": c.model,
        "images": c.images(),
        "target": 3,
        "samples": 2,
        "noise": 0.1,
        "batch_size": 2,
        "chunk_size": 4,
    },
    "to_diverging": lambda c: {"r": c.images(), "percentile": 99.0},
    "to_grayscale": lambda c: {"r": c.images(), "percentile": 99.0},
    "GraphMirror": lambda c: {"model": c.model, "stage": 1},
    "Mirror": lambda c: {"model": c.model, "stage": 1},
    "Preprocessing": lambda c: {
        "resize_size": 72,
        "crop_size": SIDE,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    },
    "class_names": lambda c: {"model_or_name": c.model},
    "denormalize": lambda c: {"x": c.images(), "model_or_weights": c.model},
    "load_image": lambda c: {"source": c.picture(), "model_or_weights": c.model},
    "load_model": lambda c: {"name": "alexnet", "weights": "random", "seed": 0},
    "make_mirror": lambda c: {"model": c.model, "stage": 1},
    "min_input_size": lambda c: {"model": c.model, "stage": 1},
    "model_name": lambda c: {"model": c.model},
    "preprocess": lambda c: {"image": c.picture(), "model_or_weights": c.model},
    "preprocessing": lambda c: {"model_or_name": c.model},
    "receptive_field": lambda c: {"model": c.model, "stage": 1, "input_size": SIDE},
    "reconstruct": lambda c: {"model": c.model, "images": c.images(), "stage": 1, "keep": "max"},
    "sample_names": lambda c: {},
    "save_png": lambda c: {"image": torch.rand(3, 8, 8), "path": c.folder / "tile.png"},
    "stage": lambda c: {"model": c.model, "stage": 1},
    "stages": lambda c: {"model": c.model},
    "supported_models": lambda c: {},
    "tile_grid": lambda c: {"tiles": torch.rand(4, 3, 8, 8), "rows": 2, "cols": 2, "pad": 1, "fill": 0.5},
    "to_display": lambda c: {"r": c.images()},
    "to_pil": lambda c: {"x": torch.rand(3, 8, 8)},
    "unpool": _unpool_args,
    "weights_info": lambda c: {"model": c.model},
    "weights_label": lambda c: {"info": deconvnet.weights_info(c.model)},
    "merge_scans": lambda c: {"results": [c.scan()]},
    "scan_topk": lambda c: {
        "model": c.model,
        "batches": [c.images(2)],
        "k": 1,
        "stages": (1,),
        "progress": False,
    },
}

# Values a parameter legitimately takes: (function or "*" for every function, parameter, kind) -> why.
_INDEX_0 = "index 0 is the first class / channel"
_NO_PENALTY = "weight 0 turns the penalty off"
_FILL = "a value in the normalised input space (0: the mean colour); any finite number"
ACCEPTED: dict[tuple[str, str, str], str] = {
    ("*", "seed", "zero"): "0 is a seed",
    ("*", "noise_seed", "zero"): "0 is a seed",
    ("*", "target", "zero"): _INDEX_0,
    ("*", "classes", "zero"): _INDEX_0,
    ("*", "channel", "zero"): _INDEX_0,
    ("*", "channels", "zero"): _INDEX_0,
    ("*", "keep", "zero"): _INDEX_0,
    ("*", "fill", "zero"): _FILL,
    ("*", "fill", "negative"): _FILL,
    ("tile_grid", "fill", "zero"): "a colour value; any finite number",
    ("tile_grid", "fill", "negative"): "a colour value; any finite number",
    ("tile_grid", "pad", "zero"): "no padding between tiles",
    ("*", "jitter", "zero"): "no jitter",
    ("*", "border", "zero"): "0 excludes nothing: the whole map",
    ("*", "exclude_border", "zero"): "0 excludes nothing: the whole map",
    ("*", "first_image", "zero"): "images are numbered from 0",
    ("*", "blur_sigma", "zero"): "no blur (the default)",
    ("*", "weight", "zero"): _NO_PENALTY,
    ("*", "alpha_weight", "zero"): _NO_PENALTY,
    ("*", "tv_weight", "zero"): _NO_PENALTY,
    ("*", "momentum", "zero"): "no momentum",
    ("*", "noise", "zero"): "noise 0 gives the plain map (SmoothGrad's documented limit)",
    ("visualize_filters", "regularizers", "none"): "None and [] mean no regularisers, as 'none'",
    ("visualize_filters", "regularizers", "empty"): "None and [] mean no regularisers, as 'none'",
    ("visualize_units", "regularizers", "none"): "None and [] mean no regularisers, as 'none'",
    ("visualize_units", "regularizers", "empty"): "None and [] mean no regularisers, as 'none'",
    ("sanity_check", "target", "none"): "None: each image's predicted class",
    ("optimize", "description", "unknown_name"): "free text: the progress bar's label",
}


# ---------------------------------------------------------------------------------------------
# Kinds of bad value, from the parameter's type


def _members(hint: Any) -> list[Any]:
    """The members of a Union (`X | Y`, `Optional[X]`), else [hint]."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in _members(arg)]
    return [hint]


def _base(member: Any) -> Any:
    """A hint's runtime class: `Sequence[int]` -> collections.abc.Sequence, `int` -> int."""
    return typing.get_origin(member) or member


SEQUENCES = (collections.abc.Sequence, collections.abc.Iterable, list, tuple)
MAPPINGS = (collections.abc.Mapping, dict)


def _hints(fn: Any) -> dict[str, Any]:
    """The evaluated type hints of a function, a dataclass's fields or a class's constructor."""
    if inspect.isclass(fn) and not hasattr(fn, "__dataclass_fields__"):
        fn = fn.__init__
    return typing.get_type_hints(fn)


def kinds_for(param: inspect.Parameter, hint: Any) -> list[str]:
    """The kinds of bad value that apply to a parameter with this type hint and default."""
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return ["unknown_option"]
    members = _members(hint)
    bases = {_base(m) for m in members}
    optional = type(None) in bases or param.default is None
    takes = {
        "int": int in bases,
        "float": float in bases,
        "bool": bool in bases,
        "str": str in bases,
        "tensor": Tensor in bases,
        "sequence": any(b in SEQUENCES for b in bases if isinstance(b, type)),
        "mapping": any(b in MAPPINGS for b in bases if isinstance(b, type)),
    }
    kinds = ["object"] + ([] if optional else ["none"])
    if takes["int"] or takes["float"]:
        kinds += ["negative", "zero"]
        kinds += [] if takes["str"] else ["numeric_str"]
        kinds += [] if takes["bool"] else ["bool"]
    if takes["int"] and not takes["float"]:
        kinds += ["fraction", "huge"]
    if takes["float"]:
        kinds += ["nan", "inf"]
    if takes["bool"] and not (takes["int"] or takes["float"] or takes["str"]):
        kinds += ["int_for_bool", "str_for_bool"]
    if takes["str"] and os.PathLike not in bases:
        kinds += ["unknown_name", "empty_str"]
    if takes["tensor"]:
        kinds += ["tensor_nan", "tensor_rank", "tensor_empty", "tensor_list", "tensor_ndarray"]
    if takes["sequence"] or takes["mapping"]:
        empty_default = param.default is not inspect.Parameter.empty and _is_empty(param.default)
        kinds += [] if empty_default else ["empty"]
    return kinds + [k for k in NAME_KINDS.get(param.name, []) if k not in kinds]


# Kinds a parameter gets from its name: where its type says little (`target: object`), and sizes,
# whose absurd values (10**6 px) would otherwise end in an allocation error.
_LARGE = ["large"]
NAME_KINDS = {
    "target": ["negative", "huge", "fraction", "bool", "numeric_str", "unit_channel", "unit_stage"],
    **dict.fromkeys(
        ["size", "input_size", "resize_size", "crop_size", "patch", "octaves", "rows", "cols", "pad"], _LARGE
    ),
}


def _is_empty(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, str)) and len(value) == 0


def bad_value(kind: str, valid: Any) -> Any:
    """The bad value of `kind`, built from the parameter's valid value where it needs one."""
    fixed = {
        "object": object(),
        "none": None,
        "negative": -1,
        "huge": 2**64,
        "large": 10**6,
        "zero": 0,
        "numeric_str": "1",
        "bool": True,
        "fraction": 1.5,
        "nan": math.nan,
        "inf": math.inf,
        "int_for_bool": 2,
        "str_for_bool": "yes",
        "unknown_name": "no-such-name",
        "empty_str": "",
        "unit_channel": deconvnet.Unit(5, -1),
        "unit_stage": deconvnet.Unit(0, 0),
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "empty":
        return {} if isinstance(valid, collections.abc.Mapping) else []
    assert isinstance(valid, Tensor), f"kind {kind} needs a valid tensor in VALID, got {valid!r:.60}"
    if kind == "tensor_nan":
        bad = valid.double().clone() if not valid.is_floating_point() else valid.clone()
        bad.view(-1)[0] = math.nan
        return bad
    if kind == "tensor_rank":
        return valid.reshape(-1)
    if kind == "tensor_empty":
        return valid[:0]
    if kind == "tensor_list":
        return valid.tolist()
    if kind == "tensor_ndarray":
        return valid.numpy()
    raise AssertionError(f"unknown kind {kind}")


def callables() -> list[str]:
    """The exported names that are callable (functions and classes)."""
    return [name for name in deconvnet.__all__ if callable(getattr(deconvnet, name))]


def generated() -> list[tuple[str, str, str]]:
    """Every (function, parameter, kind of bad value) that the signatures and type hints give."""
    out = []
    for name in VALID:
        fn = getattr(deconvnet, name)
        hints = _hints(fn)
        for param in inspect.signature(fn).parameters.values():
            out += [(name, param.name, kind) for kind in kinds_for(param, hints.get(param.name, Any))]
    return out


def accepted(key: tuple[str, str, str]) -> bool:
    """Whether ACCEPTED lists the value as legitimate, for this function or for every one."""
    return key in ACCEPTED or ("*", *key[1:]) in ACCEPTED


CASES = [pytest.param(*key, id="-".join(key)) for key in generated() if not accepted(key)]


@pytest.fixture
def ctx(alexnet_random: nn.Module, tmp_path: Path) -> Ctx:
    return Ctx(alexnet_random, tmp_path)


@contextmanager
def counted_forwards(models: list[nn.Module]) -> Iterator[list[int]]:
    """Counts forward calls of every module of `models` on real tensors (not fx proxies)."""
    count = [0]

    def hook(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor) and not args[0].is_meta:
            count[0] += 1

    handles = [m.register_forward_pre_hook(hook) for model in models for m in model.modules()]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


def names(message: str, param: str) -> bool:
    """Whether an error message names `param` as a word (not inside another name)."""
    return re.search(rf"(?<!\w){re.escape(param)}(?!\w)", message) is not None


def test_table_covers_all() -> None:
    """Every exported callable has a valid call or an explicit reason to skip it; nothing else."""
    exported = set(callables())
    assert not set(VALID) & set(SKIPPED)
    assert set(VALID) | (set(SKIPPED) & exported) == exported, (
        f"no valid call in VALID for {sorted(exported - set(VALID) - set(SKIPPED))}"
    )
    assert set(VALID) <= exported
    assert set(SKIPPED) <= set(deconvnet.__all__)
    for name in SKIPPED:
        obj = getattr(deconvnet, name)
        record = inspect.isclass(obj) and (
            issubclass(obj, Exception) or hasattr(obj, "__dataclass_fields__") or hasattr(obj, "_fields")
        )
        assert record or not callable(obj), f"{name} is skipped but is neither a constant nor a record"


def test_every_accepted_value_is_generated() -> None:
    """No ACCEPTED entry is stale: each one matches a generated (function, parameter, kind)."""
    keys = set(generated())
    wild = {(param, kind) for _, param, kind in keys}
    stale = [k for k in ACCEPTED if (k not in keys if k[0] != "*" else k[1:] not in wild)]
    assert stale == []


@pytest.mark.filterwarnings("ignore:fooling_image. after")
@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_call_runs(name: str, ctx: Ctx) -> None:
    """The table's valid call works (so a refused bad value is refused for its own sake)."""
    getattr(deconvnet, name)(**VALID[name](ctx))


@pytest.mark.parametrize(("name", "param", "kind"), CASES)
def test_bad_value_is_refused_by_name(name: str, param: str, kind: str, ctx: Ctx) -> None:
    """A bad value gives ValueError / TypeError naming the parameter, before any forward pass."""
    fn = getattr(deconvnet, name)
    kwargs = VALID[name](ctx)
    models = [v for v in kwargs.values() if isinstance(v, nn.Module)]  # the valid call's, hooked
    signature = inspect.signature(fn).parameters[param]
    if kind == "unknown_option":
        param = "no_such_option"
        kwargs[param] = 1
    else:
        default = None if signature.default is inspect.Parameter.empty else signature.default
        kwargs[param] = bad_value(kind, kwargs.get(param, default))
    with counted_forwards(models) as forwards, pytest.raises((ValueError, TypeError)) as error:
        fn(**kwargs)
    message = str(error.value)
    assert names(message, param), f"{type(error.value).__name__} does not name {param}: {message}"
    assert forwards[0] == 0, f"{forwards[0]} forward call(s) before the error: {message}"


@pytest.mark.filterwarnings("ignore:fooling_image. after")
@pytest.mark.parametrize(
    "name", sorted(n for n in VALID if "seed" in inspect.signature(getattr(deconvnet, n)).parameters)
)
def test_numpy_int_seed_is_accepted(name: str, ctx: Ctx) -> None:
    """A numpy integer seed is a seed wherever a seed is taken."""
    getattr(deconvnet, name)(**(VALID[name](ctx) | {"seed": np.int64(1)}))


BAD_INPUTS = 1677  # the README states this number: change both when the table changes


def test_case_count() -> None:
    """The number of bad inputs tried, as the README states it."""
    assert len(CASES) == BAD_INPUTS, (
        f"{len(CASES)} bad inputs are tried now: update BAD_INPUTS and the README"
    )
