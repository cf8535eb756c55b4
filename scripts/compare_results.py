"""Compare a regenerated results folder with the committed one, figure by figure, within tolerances.

    python scripts/compare_results.py /tmp/r results     # <theirs> <committed>

Why tolerances: scripts/regenerate.py pins threads and instruction set, which makes two runs on one
machine byte-identical, but another CPU still rounds float32 sums differently (~1e-7 relative per
operation). This checker says, for every `<figure>/` folder and for the top-level MANIFEST files,
whether theirs matches the committed one: MATCH, DIFFERS (a file differs beyond its bound or
exists on one side only; with --strict-provenance also when it was made by other code or versions,
the `provenance` records differ, which is otherwise a note: the results are what is compared) or
MISSING (the figure or one of its committed files is absent), with the worst deviation found (as a
multiple of its bound: <= 1 matches). Exit status 0 when every figure matches, 1 otherwise, 2 for
bad arguments. Figures made by iterative optimisation (class_model, fooling, filters*, invert,
deep_dream) would amplify float32 rounding with every step; they are made in float64 and are
compared like every other figure (docs/reproducibility.md#optimised-images).

Rules:
- Skipped: `screenshots/` (pictures of atlas pages taken in a browser by
  scripts/screenshot_atlas.py, not made by regenerate.py), what only one run has (run.json, RUNS.json, *.log, .regenerate_state.json, .job.lock,
  .staging/, partial/), and the large local data git ignores (tiles.npz, topk.pt, maps.npz,
  images.npz; never committed). --local-data compares it too where both sides have it: its raw
  arrays are more sensitive than the figures drawn from them (SSE4.1 vs AVX2 kernels moved a
  deconvnet projection in AlexNet Fig. 2's tiles.npz by 2% of its scale, a max-pooling switch
  taken the other way, while every PNG stayed within 4 levels).
- JSON / YAML: the same keys, list lengths, booleans, None and integers (counts, indices,
  positions); other numbers within |a - b| <= rtol * max(|a|, |b|) + atol (--rtol 1e-4,
  --atol 1e-6); strings as text (below). 1e-4 is ~1000 float32 roundings (1.2e-7 each): room for
  rounding accumulated over a job's layers (measured: AVX2 vs SSE4.1 kernels on one machine moved
  Fig. 2's and the reconstructions' numbers by <= 8e-6 relative), yet 40 times finer than one grey
  level of a figure (1/255) and than the 3 - 4 significant digits any table prints; atol covers
  values that cancel to ~0 (float32 resolution of quantities of order 1 is 1.2e-7).
- .npz / .pt arrays: the same names, shapes and dtype kinds; float arrays element-wise against the
  array's scale, |a - b| <= rtol * max|committed array| + atol (rounding of a sum is relative to
  its terms, so an element near 0 of a map is as exact as the map's largest one, not more);
  integer and boolean arrays with at most --int-fraction (0.1%) of their elements different
  (rounding breaks near-ties of max-pooling switches and rankings the other way: 2 of Fig. 1's
  50,176 switch counts; an array under 1,000 elements must be equal); text arrays as text.
- Text (markdown such as table.md and MANIFEST.md, the atlas's HTML pages, strings inside JSON /
  YAML): the same words;
  the numbers in it within max(rtol * max(|a|, |b|), one unit in the last printed digit) + atol
  (a value that rounds the other way: 0.1857 vs 0.1858). Folder labels `<out>/` (a regeneration
  outside the repository) read as `results/`.
- PNG images: the same size and mode, and three bounds on d, a pixel's largest difference over its
  channels in grey levels (0..255): at most --pixel-fraction (1%) of the pixels with
  d > --pixel-levels (8); the mean difference over pixels and channels <= --mean-levels (1); no
  --block x --block (16 x 16) tile with mean d > --block-levels (32). Rounding flips values
  across a quantisation step: +-1 level anywhere (mean <= 1), and a few pixels of normalised maps
  by more (another CPU moved 3,667 of AlexNet Fig. 2's 6 million pixels, 0.06%, by up to 36
  levels; SSE4.1 vs AVX2 kernels here moved Fig. 2 and reconstruction pixels by <= 4 levels). A
  visible change is large *and* together: a changed tile or patch (two different image regions
  differ by ~50 - 100 levels on average) exceeds the tile bound even when it is a small part of a
  large sheet; a changed picture exceeds the fraction and mean bounds.
- Anything else: byte-equal.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import pickle
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

VOLATILE_NAMES = frozenset({"run.json", "RUNS.json", ".regenerate_state.json", ".job.lock"})
VOLATILE_SUFFIXES = (".log",)
VOLATILE_DIRS = frozenset({".staging", "partial", "__pycache__"})
# results/**/<name> in .gitignore: regenerated locally, not committed (tests check they are ignored)
LOCAL_DATA = frozenset({"tiles.npz", "topk.pt", "maps.npz", "images.npz"})
MANIFEST = "MANIFEST"  # the name of the top-level files' row
NUMBER = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w]|\.\d)")


@dataclass(frozen=True)
class Bounds:
    """The tolerances: numbers (rtol, atol) and images (grey levels 0..255, fractions 0..1)."""

    rtol: float = 1e-4
    atol: float = 1e-6
    pixel_levels: float = 8.0
    pixel_fraction: float = 0.01
    mean_levels: float = 1.0
    block: int = 16
    block_levels: float = 32.0
    int_fraction: float = 0.001


@dataclass(frozen=True)
class Deviation:
    """How far one value or file is off, as a multiple of its bound (<= 1 matches), and where."""

    ratio: float
    where: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Within its bound."""
        return self.ratio <= 1.0


EXACT = Deviation(0.0)


def worst(deviations: Iterator[Deviation] | list[Deviation]) -> Deviation:
    """The largest deviation (NaN counts as infinitely far); EXACT for none."""
    return max(deviations, key=lambda d: math.inf if math.isnan(d.ratio) else d.ratio, default=EXACT)


def differs(where: str, detail: str) -> Deviation:
    """A difference no tolerance covers (structure, text, bytes)."""
    return Deviation(math.inf, where, detail)


# --------------------------------------------------------------------------------------- numbers


def number_deviation(a: float, b: float, bounds: Bounds, where: str, unit: float = 0.0) -> Deviation:
    """|a - b| over max(rtol * max(|a|, |b|), unit) + atol (unit: the last printed digit's)."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return Deviation(0.0, where)
    if not (math.isfinite(a) and math.isfinite(b)):
        return differs(where, f"{a!r} vs {b!r}")
    bound = max(bounds.rtol * max(abs(a), abs(b)), unit) + bounds.atol
    return Deviation(abs(a - b) / bound, where, f"{a!r} vs {b!r}")


def last_digit(token: str) -> float:
    """One unit in the last printed digit of a decimal number ('0.1857' -> 1e-4; '12' -> 0)."""
    mantissa, _, exponent = token.lower().partition("e")
    if "." not in mantissa:
        return 0.0
    return 10.0 ** (int(exponent or 0) - len(mantissa.split(".")[1]))


def normalise_text(text: str) -> str:
    """A regeneration outside the repository labels folders `<out>/...`, results/ `results/...`."""
    return text.replace("<out>/", "results/")


def first_difference(a: str, b: str) -> str:
    """Where two texts' words first differ: the line and the text around it on each side."""
    lines_a, lines_b = a.splitlines() + [""], b.splitlines() + [""]
    pairs = zip(lines_a, lines_b, strict=False)
    i = next((i for i, (x, y) in enumerate(pairs) if NUMBER.sub("#", x) != NUMBER.sub("#", y)), 0)
    x, y = lines_a[min(i, len(lines_a) - 1)], lines_b[min(i, len(lines_b) - 1)]
    at = next((k for k, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
    start = max(0, at - 20)
    return f"text differs at line {i + 1}: {x[start : at + 30]!r} vs {y[start : at + 30]!r}"


def text_deviation(a: str, b: str, bounds: Bounds, where: str) -> Deviation:
    """Texts with the same words and numbers within bounds (or one unit in the last digit)."""
    a, b = normalise_text(a), normalise_text(b)
    if a == b:
        return Deviation(0.0, where)
    words_a, words_b = NUMBER.split(a), NUMBER.split(b)
    nums_a, nums_b = NUMBER.findall(a), NUMBER.findall(b)
    if words_a != words_b or len(nums_a) != len(nums_b):
        return differs(where, first_difference(a, b))
    return worst(
        number_deviation(float(x), float(y), bounds, f"{where}#{i}", max(last_digit(x), last_digit(y)))
        for i, (x, y) in enumerate(zip(nums_a, nums_b, strict=True))
    )


# ---------------------------------------------------------------------------------------- values


def array_deviation(a: np.ndarray, b: np.ndarray, bounds: Bounds, where: str) -> Deviation:
    """Arrays: same shape and dtype kind; floats within rtol of the committed array's scale."""
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return differs(where, f"shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
    if a.dtype.kind in "fc":
        wide = np.complex128 if a.dtype.kind == "c" else np.float64
        a, b = a.astype(wide), b.astype(wide)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        if same.all():
            return Deviation(0.0, where)
        finite = np.abs(b[np.isfinite(b)])
        scale = float(finite.max()) if finite.size else 0.0
        diff = np.abs(a - b)[~same]  # NaN or inf where only one side is finite
        biggest = float(diff.max()) if np.isfinite(diff).all() else math.inf
        ratio = biggest / (bounds.rtol * scale + bounds.atol)
        return Deviation(ratio, where, f"max |diff| {biggest:.3g} at scale {scale:.3g}")
    if a.dtype.kind == "U" and a.ndim == 0:
        return text_deviation(str(a), str(b), bounds, where)
    if np.array_equal(a, b):
        return Deviation(0.0, where)
    if a.dtype.kind not in "biu":
        return differs(where, f"{a.dtype} arrays differ")
    changed = int(np.sum(a != b))
    ratio = changed / a.size / bounds.int_fraction
    return Deviation(ratio, where, f"{changed} of {a.size} {a.dtype} values differ")


def value_deviations(a: Any, b: Any, bounds: Bounds, where: str = "") -> Iterator[Deviation]:
    """Nested dicts / lists / numbers / strings / arrays (JSON, YAML, .pt) compared by the rules:
    one deviation per leaf (and per mismatch of keys or lengths)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            yield differs(where, f"keys differ: {sorted(map(str, a.keys() ^ b.keys()))[:5]}")
        for k in [k for k in a if k in b]:
            yield from value_deviations(a[k], b[k], bounds, f"{where}/{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            yield differs(where, f"{len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b)):
            yield from value_deviations(x, y, bounds, f"{where}/{i}")
    elif isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        yield array_deviation(a, b, bounds, where)
    elif isinstance(a, bool) or isinstance(b, bool):
        yield Deviation(0.0, where) if a is b else differs(where, f"{a!r} vs {b!r}")
    elif isinstance(a, int) and isinstance(b, int):
        yield Deviation(0.0, where) if a == b else differs(where, f"{a} vs {b} (integers must be equal)")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
        yield number_deviation(float(a), float(b), bounds, where)
    elif isinstance(a, str) and isinstance(b, str):
        yield text_deviation(a, b, bounds, where)
    else:
        yield Deviation(0.0, where) if a == b else differs(where, f"{str(a)[:40]!r} vs {str(b)[:40]!r}")


# ----------------------------------------------------------------------------------------- files


def load_structured(path: Path) -> Any:
    """A JSON / YAML / .pt file's content (.pt tensors as numpy arrays)."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix in (".yaml", ".yml"):
        return yaml.safe_load(path.read_text())
    import torch

    def plain(x: Any) -> Any:
        """Tensors (nested in dicts / lists) as numpy arrays."""
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return [plain(v) for v in x] if isinstance(x, (list, tuple)) else x

    return plain(torch.load(path, map_location="cpu", weights_only=True))


def npz_deviations(a: Path, b: Path, bounds: Bounds, where: str) -> list[Deviation]:
    """Two .npz files: the same array names, every array by `array_deviation` (one at a time)."""
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        names = set(za.files) ^ set(zb.files)
        found = [differs(where, f"arrays differ: {sorted(names)[:5]}")] if names else []
        common = sorted(set(za.files) & set(zb.files))
        return found + [array_deviation(za[k], zb[k], bounds, f"{where}:{k}") for k in common]


def image_deviation(a: Path, b: Path, bounds: Bounds, where: str) -> Deviation:
    """Two images by the pixel bounds (`Bounds`); ratio: the worst of the three measures' ratios."""
    with Image.open(a) as ia, Image.open(b) as ib:
        if ia.size != ib.size or ia.mode != ib.mode:
            return differs(where, f"{ia.size} {ia.mode} vs {ib.size} {ib.mode}")
        mode = "RGBA" if "A" in ia.mode or "transparency" in ia.info else "RGB"
        pa, pb = (np.asarray(im.convert(mode), dtype=np.int16) for im in (ia, ib))
    diff = np.abs(pa - pb)  # [H, W, C] grey levels, C = 3 or 4 (with alpha)
    d = diff.max(axis=2).astype(np.float64)  # [H, W]: a pixel's largest channel difference
    if not d.any():
        return Deviation(0.0, where)
    fraction, mean = float(np.mean(d > bounds.pixel_levels)), float(diff.mean())
    h, w, n = d.shape[0], d.shape[1], bounds.block
    padded = np.pad(d, ((0, -h % n), (0, -w % n)))  # edge tiles averaged as if filled with 0
    block = float(padded.reshape(padded.shape[0] // n, n, -1, n).mean(axis=(1, 3)).max())
    ratio = max(fraction / bounds.pixel_fraction, mean / bounds.mean_levels, block / bounds.block_levels)
    detail = (
        f"{100 * fraction:.2f}% px > {bounds.pixel_levels:g} levels (max {int(d.max())}), "
        f"mean {mean:.2f}, worst {n}x{n} tile {block:.1f}"
    )
    return Deviation(ratio, where, detail)


def file_deviations(a: Path, b: Path, bounds: Bounds, where: str) -> list[Deviation]:
    """Two files of one name compared by their kind's rule (module docstring): their deviations
    (one per value of a JSON / YAML / .pt file, per array of an .npz, one otherwise)."""
    if filecmp.cmp(a, b, shallow=False):
        return [Deviation(0.0, where)]
    try:
        if a.suffix == ".png":
            return [image_deviation(a, b, bounds, where)]
        if a.suffix == ".npz":
            return npz_deviations(a, b, bounds, where)
        if a.suffix in (".json", ".yaml", ".yml", ".pt"):
            return list(value_deviations(load_structured(a), load_structured(b), bounds, where))
        if a.name == "MANIFEST.md":
            return manifest_text_deviations(a.read_text(), b.read_text(), bounds, where)
        if a.suffix in (".md", ".txt", ".csv", ".html"):
            return [text_deviation(a.read_text(), b.read_text(), bounds, where)]
    except (OSError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError, yaml.YAMLError) as error:
        return [differs(where, f"unreadable: {type(error).__name__}: {str(error)[:80]}")]
    return [differs(where, "bytes differ")]  # not byte-equal (filecmp above)


def manifest_text_deviations(a: str, b: str, bounds: Bounds, where: str) -> list[Deviation]:
    """MANIFEST.md: its "Code: commit ..." line is provenance (compared as such), the rest text."""
    lines_a, lines_b = a.splitlines(), b.splitlines()
    code_a, code_b = ([x for x in lines if x.startswith("Code: ")] for lines in (lines_a, lines_b))
    rest_a, rest_b = (
        "\n".join(x for x in lines if not x.startswith("Code: ")) for lines in (lines_a, lines_b)
    )
    code = (
        Deviation(0.0, f"{where}/provenance/code")
        if code_a == code_b
        else differs(f"{where}/provenance/code", "another commit or versions")
    )
    return [code, text_deviation(rest_a, rest_b, bounds, where)]


def is_provenance(deviation: Deviation) -> bool:
    """A deviation inside a `provenance` record (which code and versions made the file)."""
    return "/provenance/" in f"{deviation.where}/"


# --------------------------------------------------------------------------------------- figures


@dataclass
class FigureReport:
    """One figure's verdict: MATCH / DIFFERS / MISSING, files compared, the worst deviation and
    the failing files (missing ones, extra ones and those beyond their bounds)."""

    name: str
    status: str = "MATCH"
    compared: int = 0
    worst: Deviation = EXACT
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # other code or versions, when not strict


def volatile(relative: Path) -> bool:
    """A file only one run has (module docstring: skipped)."""
    return (
        relative.name in VOLATILE_NAMES
        or relative.suffix in VOLATILE_SUFFIXES
        or any(part in VOLATILE_DIRS for part in relative.parts[:-1])
    )


def figure_files(folder: Path, top_level: bool, skip: frozenset[str] = frozenset()) -> set[Path]:
    """The files to compare under a figure folder (or a results folder's own files), relative;
    volatile ones and those named in `skip` left out."""
    if not folder.is_dir():
        return set()
    found = (
        p.relative_to(folder) for p in (folder.glob("*") if top_level else folder.rglob("*")) if p.is_file()
    )
    return {p for p in found if not volatile(p) and p.name not in skip}


def compare_figure(
    name: str,
    theirs: Path,
    committed: Path,
    bounds: Bounds,
    skip: frozenset[str] = frozenset(),
    strict_provenance: bool = False,
) -> FigureReport:
    """Compare one figure folder (or, for MANIFEST, the results folders' own files); files named
    in `skip` left out. Other code or versions (the provenance records differ) is a note, or with
    `strict_provenance` a failure."""
    top = name == MANIFEST
    folder_a, folder_b = (theirs, committed) if top else (theirs / name, committed / name)
    report = FigureReport(name)
    files_a, files_b = figure_files(folder_a, top, skip), figure_files(folder_b, top, skip)
    if not folder_a.is_dir() or not files_a:
        report.status, report.failures = "MISSING", [f"no {folder_a} in <theirs>"]
        return report
    missing = sorted(f for f in files_b - files_a if f.name not in LOCAL_DATA)
    extra = sorted(f for f in files_a - files_b if f.name not in LOCAL_DATA)
    report.failures += [f"missing: {f}" for f in missing] + [f"only in <theirs>: {f}" for f in extra]
    common = sorted(files_a & files_b)
    deviations = [
        d for rel in common for d in file_deviations(folder_a / rel, folder_b / rel, bounds, str(rel))
    ]
    failing = [d for d in deviations if not d.ok]
    other_code = sorted(
        {f"{d.where}/".split("/provenance/", 1)[1].rstrip("/") or "keys" for d in failing if is_provenance(d)}
    )
    if other_code:  # said once, and left out of the worst deviation: it is not a result
        said = f"made by other code or versions (provenance): {', '.join(other_code[:6])}"
        (report.failures if strict_provenance else report.notes).append(said)
    report.failures += [
        f"{d.where}: {d.detail} ({d.ratio:.3g} x bound)" for d in failing if not is_provenance(d)
    ]
    report.compared, report.worst = len(common), worst([d for d in deviations if not is_provenance(d)])
    report.status = "MISSING" if missing else ("DIFFERS" if report.failures else "MATCH")
    return report


SCREENSHOTS = (
    "screenshots"  # pictures of pages taken in a browser (scripts/screenshot_atlas.py), not regenerated
)


def figure_names(folder: Path) -> list[str]:
    """The figure folders of a results folder (subfolders; hidden, staging and screenshot ones left out)."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != SCREENSHOTS
    )


def check_results_folder(folder: Path, argument: str) -> None:
    """ValueError naming `argument` unless `folder` is a results folder: MANIFEST.json or a
    `<figure>/result.json` in it."""
    if not folder.exists():
        raise ValueError(f"{argument} ({folder}) does not exist")
    if not folder.is_dir():
        raise ValueError(f"{argument} ({folder}) is not a folder; give a results folder such as results/")
    if not (folder / "MANIFEST.json").is_file() and not any(folder.glob("*/result.json")):
        raise ValueError(
            f"{argument} ({folder}) is not a results folder: it holds neither MANIFEST.json nor any "
            "<figure>/result.json (scripts/regenerate.py writes both)"
        )


def compare_results(
    theirs: Path,
    committed: Path,
    bounds: Bounds,
    only: list[str] | None = None,
    local_data: bool = False,
    strict_provenance: bool = False,
) -> list[FigureReport]:
    """Every figure of either folder (or those in `only`) and MANIFEST, compared: one report each
    (the local data, LOCAL_DATA, compared only with `local_data`)."""
    check_results_folder(theirs, "<theirs>")
    check_results_folder(committed, "<committed>")
    known = set(figure_names(theirs)) | set(figure_names(committed))
    unknown = sorted(set(only or ()) - known - {MANIFEST})
    if unknown:
        raise ValueError(f"--only: no figure folder {unknown} in either folder; known: {sorted(known)}")
    names = only or sorted(known)
    if only is None and (committed / "MANIFEST.json").is_file():
        names = [MANIFEST, *names]
    skip = frozenset() if local_data else LOCAL_DATA
    return [compare_figure(name, theirs, committed, bounds, skip, strict_provenance) for name in names]


# ------------------------------------------------------------------------------------------ main


def summary(reports: list[FigureReport], bounds: Bounds, details: int = 5) -> str:
    """The printed table: one row per figure, then the failing files of each that failed."""
    width = max([len(r.name) for r in reports] + [6])
    lines = [
        f"bounds: numbers |a-b| <= {bounds.rtol:g}*max(|a|,|b|) + {bounds.atol:g} (arrays: of the "
        f"array's scale); images: <= {100 * bounds.pixel_fraction:g}% px > {bounds.pixel_levels:g} "
        f"levels, mean <= {bounds.mean_levels:g}, {bounds.block}x{bounds.block} tiles <= "
        f"{bounds.block_levels:g}; integers equal (arrays: <= {100 * bounds.int_fraction:g}% differ)",
        "",
        f"{'figure':<{width}}  {'status':<7}  files  worst deviation (x bound)",
    ]
    for r in reports:
        shown = (
            f"{r.worst.ratio:.3g}  {r.worst.where}: {r.worst.detail}"
            if r.worst.ratio > 0
            else "0 (identical values)"
        )
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {r.compared:>5}  {shown if r.compared else '-'}")
    for r in reports:
        lines += [f"note: {r.name} {n}" for n in r.notes]
        if r.failures:
            lines += ["", f"{r.name} {r.status}:"] + [f"  {f}" for f in r.failures[:details]]
            lines += [f"  ... and {len(r.failures) - details} more"] if len(r.failures) > details else []
    ok = sum(r.status == "MATCH" for r in reports)
    return "\n".join([*lines, "", f"{ok} of {len(reports)} match"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (bounds default to `Bounds()`)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], epilog=__doc__.split("Rules:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("theirs", type=Path, help="the regenerated results folder")
    parser.add_argument("committed", type=Path, help="the committed results folder (e.g. results)")
    parser.add_argument(
        "--only", nargs="+", help="compare these figures only (MANIFEST: the top-level files)"
    )
    parser.add_argument(
        "--local-data",
        action="store_true",
        help="also compare the large local data git ignores (tiles.npz, ...) where both sides have it",
    )
    parser.add_argument("--details", type=int, default=5, help="failing files listed per figure (default 5)")
    parser.add_argument(
        "--strict-provenance",
        action="store_true",
        help="figures made by other code or versions (their provenance differs) count as DIFFERS; "
        "by default that is a note and only the results are compared",
    )
    defaults = Bounds()
    for name, help_text in (
        ("rtol", "relative bound of numbers"),
        ("atol", "absolute bound of numbers"),
        ("pixel_levels", "grey levels (0..255) a pixel may differ by without counting"),
        ("pixel_fraction", "fraction (0..1) of pixels that may differ by more"),
        ("mean_levels", "mean difference in grey levels over pixels and channels"),
        ("block", "side of the tiles (px) whose mean difference is bounded"),
        ("block_levels", "mean difference in grey levels of the worst tile"),
        ("int_fraction", "fraction (0..1) of an integer array's elements that may differ"),
    ):
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                            help=f"{help_text} (default {default:g})")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Compare, print the summary; 0 when every figure matches, 1 otherwise (2: bad arguments)."""
    args = parse_args(argv)
    names = (
        "rtol",
        "atol",
        "pixel_levels",
        "pixel_fraction",
        "mean_levels",
        "block",
        "block_levels",
        "int_fraction",
    )
    values = {n: getattr(args, n) for n in names}
    bad = [n for n, v in values.items() if not (math.isfinite(v) and v > 0)]
    try:
        if bad:
            raise ValueError(
                f"--{bad[0].replace('_', '-')} must be a finite number > 0, got {values[bad[0]]}"
            )
        reports = compare_results(
            args.theirs, args.committed, Bounds(**values), args.only, args.local_data, args.strict_provenance
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(reports, Bounds(**values), args.details))
    return 0 if all(r.status == "MATCH" for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
