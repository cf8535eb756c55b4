"""Which activations of a stage are kept before projecting (docs/mirror.md#what-is-kept-before-projecting).

keep="all": the whole stage output. keep="max": per image, the single strongest activation of the
whole layer. keep=c: per image, channel c's strongest activation. keep=[c1, c2, ...] (one image):
each channel's strongest activation, one reconstruction each. Kept activations carry their own value.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from deconvnet.core.mirror import Seeds

Keep = str | int | Sequence[int]


def _is_channel(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_keep(keep: object, channels: int, batch: int) -> Keep:
    """Validate `keep` against the stage's channel count and the batch size."""
    accepted = (
        f"'all', 'max', a channel int in 0..{channels - 1}, or a non-empty sequence of "
        "channel ints (with one image)"
    )
    if isinstance(keep, str):
        if keep not in ("all", "max"):
            raise ValueError(f"keep: expected {accepted}, got {keep!r}")
        return keep
    if _is_channel(keep):
        if not 0 <= int(keep) < channels:
            raise ValueError(f"keep: channel {int(keep)} is outside this layer's channels 0..{channels - 1}")
        return int(keep)
    if isinstance(keep, Tensor) and keep.dim() == 0 and not keep.is_floating_point():
        return check_keep(int(keep), channels, batch)
    if isinstance(keep, (Sequence, Tensor)) and not isinstance(keep, (str, bytes)):
        items = keep.tolist() if isinstance(keep, Tensor) else list(keep)
        if not items or not all(_is_channel(c) for c in items):
            raise ValueError(f"keep: expected {accepted}, got {keep!r}")
        bad = [int(c) for c in items if not 0 <= int(c) < channels]
        if bad:
            raise ValueError(f"keep: channel(s) {bad} outside this layer's channels 0..{channels - 1}")
        if batch != 1:
            raise ValueError(
                f"keep: a sequence of channels needs exactly one image (B == 1), "
                f"got B == {batch}; pass one image or one channel int"
            )
        return [int(c) for c in items]
    raise ValueError(f"keep: expected {accepted}, got {keep!r}")


def _unravel(flat: Tensor, width: int) -> tuple[Tensor, Tensor]:
    return flat // width, flat % width


def select_seeds(output: Tensor, keep: int | str | list[int]) -> Seeds:
    """Seeds for a validated point `keep` ('max', channel int, channel list) from [B, C, h, w]."""
    b, c, h, w = output.shape
    if keep == "max":
        flat = output.flatten(1).argmax(1).cpu()  # first maximum on ties
        channel, pos = flat // (h * w), flat % (h * w)
        image = torch.arange(b)
    elif isinstance(keep, int):
        pos = output[:, keep].flatten(1).argmax(1).cpu()
        channel = torch.full((b,), keep, dtype=torch.long)
        image = torch.arange(b)
    else:
        channel = torch.tensor(keep, dtype=torch.long)
        pos = output[0, channel.to(output.device)].flatten(1).argmax(1).cpu()
        image = torch.zeros(len(keep), dtype=torch.long)
    y, x = _unravel(pos, w)
    value = output[
        image.to(output.device), channel.to(output.device), y.to(output.device), x.to(output.device)
    ]
    return Seeds(image, channel, y, x, value)
