"""What the five optimisation-family experiments share: checking the model request before anything
is built, checking common values, the input images, and `Job`, one job folder being written cell
by cell (checkpoints in `partial/`, config.yaml, images.npz, the sheets, result.json). The
displays and the sheets are drawn by `deconvnet.figures.sheet` and `deconvnet.figures.synthesis`.

Files of every job: `config.yaml` (the resolved config), `result.json` (experiment, model, weights
and `weights_label`, every setting, each cell's record with its `Optimized.settings`,
`provenance()`), one PNG per cell, the sheet(s) (`grid.png`), and `images.npz`: every raw image
in the model's normalised input space, float32, key `<cell>` ([K, 3, H, W]), `<cell>__history`
([steps, K], the objective per step) and `<cell>__input` where the cell started from a photo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from deconvnet.core.validation import as_list
from deconvnet.data.images import describe_image, open_image, preprocess
from deconvnet.data.models import weights_label
from deconvnet.figures.sheet import draw_sheet
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, JobFolder, jsonable
from deconvnet.jobs.provenance import provenance
from deconvnet.jobs.request import ModelRequest, load_logged
from deconvnet.jobs.saliency import RANDOM_CLASSIFIER_NOTE, classifier_is_random, image_label

log = logging.getLogger(__name__)

IMAGES_FILE = "images.npz"
Compute = Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]


def classifier_note(weights: Mapping[str, Any]) -> str | None:
    """RANDOM_CLASSIFIER_NOTE for random and HED weights (their classifier is random), else None."""
    return RANDOM_CLASSIFIER_NOTE if classifier_is_random(weights) else None


def model_header(
    experiment: str, request: ModelRequest, wdict: Mapping[str, Any], note: str | None = None
) -> dict[str, Any]:
    """The result.json fields every job has: experiment, model, weights, the classifier note."""
    return {
        "experiment": experiment,
        "model": request.name,
        "weights": dict(wdict),
        "weights_label": weights_label(wdict),
        "random_weights": wdict.get("weights") == "random",
        "random_classifier": classifier_is_random(wdict),
        "classifier_note": note,
        "device": str(request.device),
    }


def title_lines(
    what: str, request: ModelRequest, wdict: Mapping[str, Any], note: str | None = None
) -> list[str]:
    """A sheet's first lines: what it shows, the model and its weights exactly, the note."""
    label = weights_label(wdict)
    random = wdict.get("weights") == "random"
    lines = [f"{what}: {request.name} [{label.upper() if random else label}]"]
    if note:
        lines.append(f"{note.upper()} — the classifier's weights are random")
    return lines


# ------------------------------------------------------------------------------------ values


def check_image_size(request: ModelRequest, size: object, stage: int | None = None) -> int:
    """null -> the weights' crop size; else an int the model (up to `stage`) accepts."""
    from deconvnet.optim.checks import check_size

    if size is None:
        size = request.preprocessing.crop_size
    return check_size(request.skeleton, size, stage)


# ------------------------------------------------------------------------------------ images


@dataclass(frozen=True)
class Picture:
    """One checked input image: its label (file names, npz keys), the image, where it is from."""

    label: str
    image: Image.Image
    info: dict[str, Any]


def check_pictures(images: object, key: str = "images", single: bool = False) -> list[Picture]:
    """A sample name or image path, or (unless `single`) a non-empty list of them; each opened
    (a missing file or unknown sample -> FileNotFoundError) and labelled uniquely."""
    accepted = "a sample name or image path" + ("" if single else ", or a non-empty list of them")
    items = [images] if isinstance(images, (str, Path)) else None if single else as_list(images)
    if not items:
        raise ValueError(f"{key}: expected {accepted}, got {images!r}")
    pictures = []
    for item in items:
        if not isinstance(item, (str, Path)) or not str(item).strip():
            raise ValueError(f"{key}: expected {accepted}, got the item {item!r}")
        picture = open_image(str(item))
        pictures.append(
            Picture(
                image_label(str(item)),
                picture,
                describe_image(str(item)) | {"original_size_wh": list(picture.size)},
            )
        )
    labels = [p.label for p in pictures]
    repeated = sorted({name for name in labels if labels.count(name) > 1})
    if repeated:
        raise ValueError(
            f"{key}: each image needs its own name; {', '.join(repeated)} appears more than once"
        )
    return pictures


def prepare(image: Image.Image, model: str | nn.Module, size: int) -> Tensor:
    """The weights' eval preprocessing (resize, centre crop), then resized to size x size
    (bilinear, antialiased) if that differs -> [1, 3, size, size] normalised, in the model's
    float type (float32 for a name). The resize runs in that type: in float32 its rounding
    differs between CPU kernels, which a float64 optimisation would then carry."""
    x = preprocess(image, model).unsqueeze(0)
    if isinstance(model, nn.Module):
        x = x.to(next(model.parameters()).dtype)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


# ------------------------------------------------------------------------------------- a job


class Job:
    """One job folder being written: config.yaml first, then the model (weights logged), cells
    checkpointed as they finish (`cell`), and at the end images.npz, the sheets, result.json.

    The folder is a `JobFolder`, held from here to `finish`. A rerun with the same config into the
    same folder takes the finished cells from `partial/` and computes only the others; a
    different config starts afresh."""

    def __init__(
        self,
        out_dir: str | Path,
        experiment: str,
        request: ModelRequest,
        config: Mapping[str, Any],
        cells: int,
        progress: bool = True,
    ) -> None:
        self.started = time.perf_counter()
        self.folder = JobFolder(out_dir).__enter__()  # held until `finish` (the kernel frees it if killed)
        self.out, self.experiment, self.request = self.folder.path, experiment, request
        self.config = jsonable(config)
        self.done = self.folder.start(self.config)
        self.net, self.weights = load_logged(request)
        self.keys: list[str] = []
        self.extra: dict[str, np.ndarray] = {}
        self.total, self.show_progress = cells, progress
        self.bar: tqdm | None = None

    @contextmanager
    def progress(self) -> Iterator[None]:
        """A progress bar over the cells (log lines printed above it)."""
        with (
            logging_redirect_tqdm(),
            tqdm(
                total=self.total, desc=self.experiment, unit="cell", disable=not self.show_progress
            ) as self.bar,
        ):
            yield
        self.bar = None

    def cell(self, key: str, compute: Compute) -> dict[str, Any]:
        """The record of cell `key`: from its checkpoint, or `compute()` -> (arrays, record),
        then checkpointed. Arrays: "images" [K, 3, H, W] and e.g. "history", "input"."""
        record = self.done.load(key)
        if record is None:
            t0 = time.perf_counter()
            arrays, record = compute()
            arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
            record = jsonable({"key": key, **record, "seconds": round(time.perf_counter() - t0, 3)})
            self.done.save(key, arrays, record)
        else:
            log.info("cell %s: taken from its checkpoint", key)
        self.keys.append(key)
        if self.bar is not None:
            self.bar.update(1)
        return record

    def images(self, key: str, name: str = "images") -> Tensor:
        """A finished cell's array as a float32 tensor."""
        return torch.from_numpy(self.done.arrays(key)[name].copy())

    def keep(self, name: str, array: Tensor) -> None:
        """Save `array` in images.npz under `name` too (e.g. an input shared by every cell)."""
        self.extra[name] = np.ascontiguousarray(array.detach().cpu().numpy(), dtype=np.float32)

    def complete(self, result: Mapping[str, Any]) -> None:
        """Write result.json, drop the checkpoints and release the folder: the job is done."""
        self.folder.write_result(result)
        self.done.clear()
        self.folder.__exit__(None, None, None)

    def finish(self, result: Mapping[str, Any], sheets: Sequence[Mapping[str, Any]]) -> dict:
        """Write images.npz, every sheet and result.json; drop the checkpoints; the result."""
        arrays = {}
        for key in self.keys:
            for name, array in self.done.arrays(key).items():
                arrays[key if name == "images" else f"{key}__{name}"] = array
        arrays.update(self.extra)
        np.savez(self.out / IMAGES_FILE, **arrays)
        sheets = jsonable(list(sheets))
        for sheet in sheets:
            draw_sheet(self.out, sheet)
        full = {
            **jsonable(result),
            "sheets": sheets,
            "files": {"sheets": [s["file"] for s in sheets], "images": IMAGES_FILE, "config": CONFIG_FILE},
            "config": self.config,
            "provenance": provenance(),
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.complete(full)
        log.info(
            "wrote %d cell(s), %s, %s and %s to %s",
            len(self.keys),
            ", ".join(s["file"] for s in sheets),
            IMAGES_FILE,
            RESULT_FILE,
            self.out,
        )
        return full


SYNTHESIS_EXPERIMENTS = ("filters", "class_model", "deep_dream", "invert", "fooling")


def render_synthesis(job_dir: str | Path) -> list[Path]:
    """Redraw every sheet of a finished optimisation-family job from its saved PNGs and
    result.json, without the model."""
    import json

    job = Path(job_dir)
    source = job / RESULT_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run the experiment first)")
    result = json.loads(source.read_text())
    if result.get("experiment") not in SYNTHESIS_EXPERIMENTS:
        raise ValueError(
            f"job_dir: {source} names experiment {result.get('experiment')!r}; "
            f"expected one of {', '.join(SYNTHESIS_EXPERIMENTS)}"
        )
    return [draw_sheet(job, sheet) for sheet in result["sheets"]]
