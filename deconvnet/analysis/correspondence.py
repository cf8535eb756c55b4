"""Correspondence analysis (Zeiler & Fergus 2014, Sec. 5, Table 1).

The paper occludes the same object part (left eye, right eye, nose) in 5 dog images, takes the
feature vectors x_i (original image i) and x~_i (part occluded) at layer l,
eps_i^l = x_i^l - x~_i^l, and measures how consistently the occlusion changes the features across images:

    Delta_l = sum_{i, j = 1..N, i != j} H(sign(eps_i^l), sign(eps_j^l))

with H the Hamming distance; lower = more consistent. The control occludes random positions
instead. `correspondence(model, images, boxes)` computes it for every part and layer; the choices
the paper leaves open, made here:

- Pairs: `Correspondence.delta` is the paper's sum over ORDERED pairs i != j (each pair counted
  twice, = 2 x the sum over i < j; the summary gives both). Distances per pair are kept ([N, N]).
- Normalised: Delta / (N (N - 1) D), D = the feature vector's length: the mean fraction of the D
  signs that differ between two images; "+- std" of a part row is the population std (ddof 0)
  of H / D over the N (N - 1) / 2 unordered pairs (the paper gives mean +- std without saying
  over what). For the random control it is the mean +- population std over the random draws of
  the draw's normalised Delta.
- Occluder: the box's pixels set to `fill` in every channel of the model's normalised input;
  0.0 (default) is the dataset's mean colour, the grey of Fig. 7. Boxes are (top, left, height,
  width) in the input's pixels, rows top..top+height-1; a box must lie wholly inside the image
  (never clipped).
- sign(0) = 0: H counts the positions where the ternary signs {-1, 0, +1} differ, so a unit the
  occlusion leaves exactly unchanged (eps = 0, e.g. outside the occluder's projective field, or
  zero after the ReLU both times) differs from one it raises or lowers.
- Random boxes: for each image one box of the same height and width as that image's part box,
  its top-left corner uniform over every position that keeps it wholly inside the image; it may
  overlap the part (the paper's "random locations" say nothing more). Draw d of part p uses
  numpy's PCG64 seeded with (seed, crc32(p), d): reproducible, and independent of the other
  parts and of their order.
- Layers (`deconvnet.analysis.layers`): a stage number or name, any module path of the model's
  graph, "logits" (and "pre1".."pre5", "input"; "fc6" / "fc7" on VGG / AlexNet), checked on the
  model before any work. Default: the paper's (5, "fc7") on VGG / AlexNet; elsewhere stage 5 and
  the vector the last Linear layer reads, fc7's analogue (ResNet "avgpool", EfficientNet-Lite0
  "global_pool"; "logits" where no module outputs it).
- Features: `deconvnet.core.probe` (a layer's whole output, e.g. a stage's after its ReLU,
  "fc6" / "fc7" after their ReLU, flattened), under no_grad, Dropout as the identity; no hooks,
  the caller's model untouched.
  `batch_size` images per forward pass; 1 (default) makes each feature vector depend on its
  image alone: on CPU the classifier's matrix products round differently for different batch
  sizes (up to ~7e-5 on VGG16 fc7 values measured here), which can flip sign(eps) of units the
  occlusion barely changes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from deconvnet.analysis.layers import Layer, check_layers, deepest_point, default_layers
from deconvnet.core.precision import full_float32
from deconvnet.core.probe import point_key, probe
from deconvnet.core.validation import (
    as_list,
    check_bool,
    check_count,
    check_device,
    check_images,
    check_module,
    check_seed,
    is_int,
)
from deconvnet.data.paths import REPO_ROOT
from deconvnet.optim.checks import model_device

Box = tuple[int, int, int, int]  # (top, left, height, width) in the input's pixels
DEFAULT_LAYERS: tuple[Layer, ...] = (5, "fc7")  # the paper's layers 5 and 7 (VGG / AlexNet)
BOX_FORMAT = "[top, left, height, width] (ints, pixels of the input image)"


# ------------------------------------------------------------------------------------ checks


def _image_name(index: int, labels: Sequence[str] | None) -> str:
    return f"image {index}" + (f" ({labels[index]})" if labels else "")


def check_box(box: object, where: str, height: int, width: int) -> Box:
    """One box as (top, left, height, width), wholly inside a height x width image, or
    ValueError starting with `where` (the part and the image)."""
    items = as_list(box)
    if items is None or len(items) != 4 or not all(is_int(v) for v in items):
        raise ValueError(f"{where}: expected {BOX_FORMAT}, got {box!r}")
    top, left, h, w = (int(v) for v in items)
    if h < 1 or w < 1:
        raise ValueError(f"{where}: the box {[top, left, h, w]} is empty; height and width must be >= 1")
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(
            f"{where}: the box {[top, left, h, w]} (rows {top}..{top + h - 1}, "
            f"columns {left}..{left + w - 1}) is not inside the {height}x{width} "
            f"image (rows 0..{height - 1}, columns 0..{width - 1})"
        )
    return top, left, h, w


def check_boxes(
    boxes: object, count: int, height: int, width: int, labels: Sequence[str] | None = None
) -> dict[str, tuple[Box, ...]]:
    """A non-empty mapping part -> `count` boxes (one per image, in the images' order), each
    wholly inside the image; ValueError naming the part and the image otherwise."""
    if not isinstance(boxes, Mapping) or not boxes:
        raise ValueError(
            f"boxes: expected a non-empty mapping part name -> list of {count} "
            f"boxes {BOX_FORMAT}, one per image, got {boxes!r:.80}"
        )
    checked = {}
    for part, per_image in boxes.items():
        if not isinstance(part, str) or not part.strip():
            raise ValueError(f"boxes: part names must be non-empty strings, got {part!r}")
        items = as_list(per_image)
        if items is None or len(items) != count:
            got = f"{len(items)}" if items is not None else repr(per_image)
            raise ValueError(f"boxes[{part!r}]: expected {count} boxes (one per image), got {got}")
        checked[part] = tuple(
            check_box(b, f"boxes[{part!r}], {_image_name(k, labels)}", height, width)
            for k, b in enumerate(items)
        )
    return checked


def check_fill(value: object) -> float:
    """The occluder's value: any finite number (normalised input space)."""
    if is_int(value) or (isinstance(value, float) and math.isfinite(value)):
        return float(value)
    raise ValueError(
        f"fill: expected a finite number (the occluder's value in the normalised "
        f"input space; 0.0 = the mean colour), got {value!r}"
    )


def check_work_device(model: nn.Module, device: object) -> torch.device:
    """None -> the model's device; else `device`, which must be where the model's weights are
    (the caller's model is never moved)."""
    check_module(model)
    weights_at, _ = model_device(model)
    if device is None:
        return weights_at
    target = check_device(str(device) if isinstance(device, torch.device) else device)
    same = target.type == weights_at.type and (
        target.index is None or target.index == (weights_at.index or 0)
    )
    if not same:
        raise ValueError(
            f"device: the model's weights are on {weights_at}, got {device!r}; the "
            "caller's model is never moved: move it first (model.to(device)) or "
            "pass device=None"
        )
    return weights_at


# ------------------------------------------------------------------------------- the pieces


def occlude(images: Tensor, boxes: Sequence[Box], fill: float = 0.0) -> Tensor:
    """[N, 3, H, W] -> a copy [N, 3, H, W] with image k's box `boxes[k]` set to `fill` in every
    channel (normalised input space: 0.0 = the mean colour)."""
    out = images.clone()
    for k, (top, left, height, width) in enumerate(boxes):
        out[k, :, top : top + height, left : left + width] = fill
    return out


def random_boxes(
    boxes: Sequence[Box], height: int, width: int, seed: int, part: str, draw: int
) -> tuple[Box, ...]:
    """One random box per image, each the size of that image's `boxes[k]`, top-left uniform
    over the positions inside the height x width image; numpy PCG64 seeded with
    (seed, crc32(part), draw)."""
    rng = np.random.default_rng([seed, zlib.crc32(part.encode("utf-8")), draw])
    return tuple(
        (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)
        for _, _, h, w in boxes
    )


def draw_random_boxes(
    boxes: Mapping[str, Sequence[Box]], height: int, width: int, draws: int, seed: int
) -> dict[str, tuple[tuple[Box, ...], ...]]:
    """part -> `draws` tuples of random boxes (one per image), see `random_boxes`."""
    return {
        part: tuple(random_boxes(per_image, height, width, seed, part, d) for d in range(draws))
        for part, per_image in boxes.items()
    }


def features(
    model: nn.Module, images: Tensor, layers: Sequence[Layer], batch_size: int = 1, bar: tqdm | None = None
) -> dict[Layer, Tensor]:
    """[N, 3, H, W] -> {layer: [N, D]}: each layer's activation (`probe`) flattened, computed
    `batch_size` images per forward pass under no_grad."""
    parts: dict[Layer, list[Tensor]] = {layer: [] for layer in layers}
    with torch.no_grad():
        for chunk in images.split(batch_size):
            found = probe(model, chunk, layers)
            for layer in layers:
                parts[layer].append(found[layer].flatten(1))
            if bar is not None:
                bar.update(chunk.shape[0])
    return {layer: torch.cat(found) for layer, found in parts.items()}


def sign_changes(original: Tensor, occluded: Tensor) -> Tensor:
    """[N, D], [N, D] -> sign(original - occluded) [N, D] int8 in {-1, 0, +1}; sign(0) = 0."""
    return torch.sign(original - occluded).to(torch.int8)


def hamming_matrix(signs: Tensor) -> Tensor:
    """[N, D] -> [N, N] int64: H[i, j] = the number of positions where signs[i] != signs[j]."""
    n = signs.shape[0]
    out = torch.zeros(n, n, dtype=torch.int64, device=signs.device)
    for i in range(n):
        out[i] = (signs[i : i + 1] != signs).sum(dim=1)
    return out


def part_distances(
    model: nn.Module,
    images: Tensor,
    base: Mapping[Layer, Tensor],
    boxes: Sequence[Box],
    fill: float = 0.0,
    batch_size: int = 1,
    bar: tqdm | None = None,
) -> dict[Layer, np.ndarray]:
    """Occlude image k's `boxes[k]` in images [N, 3, H, W]; -> {layer: [N, N] int64 Hamming
    distances between the sign(eps) vectors}, eps = base[layer] ([N, D]) - occluded features."""
    occluded = features(model, occlude(images, boxes, fill), list(base), batch_size, bar)
    return {layer: hamming_matrix(sign_changes(base[layer], occluded[layer])).cpu().numpy() for layer in base}


# ------------------------------------------------------------------------------- the result


def _pairs(h: np.ndarray) -> np.ndarray:
    """[N, N] -> the N (N - 1) / 2 values above the diagonal."""
    return h[np.triu_indices(h.shape[0], 1)]


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=0))


@dataclass(frozen=True)
class Correspondence:
    """Table 1 for N images: per part and layer the [N, N] Hamming distances of the sign(eps)
    vectors (`distances`), the same for each random draw ([draws, N, N], `random_distances`),
    and the boxes used. Layers are keyed "stage5" / "fc7" (`layer_key`)."""

    parts: tuple[str, ...]
    layers: tuple[Layer, ...]
    boxes: dict[str, tuple[Box, ...]]
    random_boxes: dict[str, tuple[tuple[Box, ...], ...]]
    feature_length: dict[str, int]
    distances: dict[str, dict[str, np.ndarray]]
    random_distances: dict[str, dict[str, np.ndarray]]
    settings: dict[str, Any] = field(default_factory=dict)

    def delta(self, part: str, layer: Layer) -> int:
        """The paper's Delta_l: sum over ordered pairs i != j (= 2 x the sum over i < j)."""
        return int(self.distances[part][layer_key(layer)].sum())

    def random_delta(self, part: str, layer: Layer) -> np.ndarray:
        """[draws] int64: Delta_l of each random draw (ordered pairs i != j)."""
        return self.random_distances[part][layer_key(layer)].sum(axis=(1, 2)).astype(np.int64)

    def row(self, part: str, layer: Layer) -> dict[str, Any]:
        """One table cell: Delta (i != j and i < j), normalised mean +- std over pairs, and the
        random control's Delta and normalised Delta per draw with mean +- std over draws."""
        key = layer_key(layer)
        h, d = self.distances[part][key], self.feature_length[key]
        n = h.shape[0]
        mean, std = _mean_std(_pairs(h) / d)
        per_draw = self.random_delta(part, layer)
        normalised = per_draw / (n * (n - 1) * d)
        r_mean, r_std = _mean_std(per_draw)
        n_mean, n_std = _mean_std(normalised)
        return {
            "delta": self.delta(part, layer),
            "delta_i_lt_j": int(_pairs(h).sum()),
            "pairs": n * (n - 1) // 2,
            "feature_length": d,
            "normalized_mean": mean,
            "normalized_std": std,
            "random": {
                "draws": len(per_draw),
                "delta_per_draw": per_draw.tolist(),
                "delta_mean": r_mean,
                "delta_std": r_std,
                "normalized_per_draw": normalised.tolist(),
                "normalized_mean": n_mean,
                "normalized_std": n_std,
            },
        }

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """part -> layer key -> `row`."""
        return {
            part: {layer_key(layer): self.row(part, layer) for layer in self.layers} for part in self.parts
        }


def layer_key(layer: Layer) -> str:
    """'stage5' for a stage number, the layer itself otherwise ('fc7', 'layer4.1', 'logits';
    already-made keys too)."""
    return layer if isinstance(layer, str) else point_key(layer)


# ------------------------------------------------------------------------------ the analysis


@full_float32()
def correspondence(
    model: nn.Module,
    images: Tensor,
    boxes: Mapping[str, Sequence[Box]],
    layers: Layer | Sequence[Layer] | None = None,
    random_draws: int = 10,
    seed: int = 0,
    fill: float = 0.0,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Correspondence:
    """Zeiler & Fergus's Table 1 on `images` [N, 3, H, W] (normalised input, N >= 2): for each
    part in `boxes` (part -> N boxes (top, left, height, width), one per image) and each layer
    (module doc; None: the model's default), the [N, N] Hamming distances of sign(x_i - x~_i)
    and the same for `random_draws` draws of random boxes of the same sizes (module doc).

    seed: the random boxes' draws; fill: the occluder's value; device: None = the model's (a
    different one -> ValueError: the model is never moved). One forward pass per image per
    occlusion: N (1 + parts (1 + random_draws)) images in all.
    """
    where = check_work_device(model, device)
    layers = default_layers(model, 5) if layers is None else check_layers(model, layers)
    images = check_images(images, model, "images", deepest_point(model, layers))
    n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    if n < 2:
        raise ValueError(f"images: expected at least 2 images (Delta sums over pairs), got {n}")
    parts = check_boxes(boxes, n, height, width)
    draws = check_count("random_draws", random_draws)
    seed = check_seed(seed, "the random boxes' draws")
    fill = check_fill(fill)
    batch_size, progress = check_count("batch_size", batch_size), check_bool("progress", progress)
    x = images.detach().to(device=where, dtype=model_device(model)[1])
    randoms = draw_random_boxes(parts, height, width, draws, seed)
    total = n * (1 + len(parts) * (1 + draws))
    with tqdm(total=total, desc="correspondence", unit="image", disable=not progress) as bar:
        base = features(model, x, layers, batch_size, bar)
        found = {p: part_distances(model, x, base, parts[p], fill, batch_size, bar) for p in parts}
        shuffled = {
            p: [part_distances(model, x, base, r, fill, batch_size, bar) for r in randoms[p]] for p in parts
        }
    return Correspondence(
        parts=tuple(parts),
        layers=layers,
        boxes=parts,
        random_boxes=randoms,
        feature_length={layer_key(layer): int(base[layer].shape[1]) for layer in layers},
        distances={p: {layer_key(layer): found[p][layer] for layer in layers} for p in parts},
        random_distances={
            p: {layer_key(layer): np.stack([d[layer] for d in shuffled[p]]) for layer in layers}
            for p in parts
        },
        settings={
            "random_draws": draws,
            "seed": seed,
            "fill": fill,
            "batch_size": batch_size,
            "image_size": [height, width],
        },
    )


# ------------------------------------------------------------------------------ a box file


@dataclass(frozen=True)
class BoxFile:
    """A checked box file: the images (sample names or paths, in order), each part's boxes in
    that order, the coordinate frame's side, its description and where it was read from."""

    images: tuple[str, ...]
    parts: dict[str, tuple[Box, ...]]
    image_size: int
    description: str
    source: str


PART_NAME = "letters, digits, '_' or '-' (it names files)"


def _read_mapping(path: Path) -> Any:
    """A YAML (.yaml / .yml) or JSON (.json) file's content."""
    import json

    import yaml

    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        kind = path.suffix[1:].upper()
        raise ValueError(f"boxes: {path} is not valid {kind} ({error})") from None


def load_box_file(path: str | Path) -> BoxFile:
    """Read a box file (YAML or JSON): `description`, `image_size` (the square frame the boxes
    are given in), `images` (a list of sample names or paths) and `parts`: part -> image -> box
    [top, left, height, width]. Every part needs a box for every image (a missing or unknown
    image, a box outside the frame -> ValueError naming the file, part and image)."""
    path = Path(path).expanduser()
    if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
        raise FileNotFoundError(
            f"boxes: expected a YAML or JSON box file, {path} does not exist or has another suffix"
        )
    data = _read_mapping(path)
    where = f"boxes: {path}"
    if not isinstance(data, dict) or not {"image_size", "images", "parts"} <= set(data):
        raise ValueError(f"{where}: expected a mapping with keys image_size, images, parts (and description)")
    size, images, parts = data["image_size"], as_list(data["images"]), data["parts"]
    if not is_int(size) or size < 1:
        raise ValueError(f"{where}: image_size: expected an int >= 1, got {size!r}")
    if not images or not all(isinstance(i, str) and i for i in images) or len(set(images)) != len(images):
        raise ValueError(
            f"{where}: images: expected a list of distinct sample names or paths, got {data['images']!r}"
        )
    if not isinstance(parts, dict) or not parts:
        raise ValueError(
            f"{where}: parts: expected a non-empty mapping part -> image -> box {BOX_FORMAT}, got {parts!r}"
        )
    checked = {}
    for part, per_image in parts.items():
        if not isinstance(part, str) or not part or not all(c.isalnum() or c in "_-" for c in part):
            raise ValueError(f"{where}: part names must be {PART_NAME}, got {part!r}")
        if not isinstance(per_image, dict) or set(per_image) != set(images):
            got = sorted(per_image) if isinstance(per_image, dict) else per_image
            raise ValueError(
                f"{where}: parts.{part}: expected one box for each image ({', '.join(images)}), got {got!r}"
            )
        ordered = [per_image[name] for name in images]
        try:
            checked.update(check_boxes({part: ordered}, len(images), size, size, images))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return BoxFile(tuple(images), checked, int(size), str(data.get("description", "")), _shown_path(path))


def _shown_path(path: Path) -> str:
    """`path` relative to the repository when inside it (no absolute paths in results)."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
