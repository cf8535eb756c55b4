"""Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279) at a stage: docs/methods.md#score-cam.

As the authors' code computes it (github.com/haofanwang/Score-CAM, cam/scorecam.py): A = the
stage's maps (as Grad-CAM's, `deconvnet.gradient.gradcam`) of image x, C channels.

    U_k = A_k upsampled bilinearly (align_corners=False) to the input size
    M_k = (U_k - min U_k) / (max U_k - min U_k)         (a mask in [0, 1]; a channel whose map is
                                                         constant is skipped: weight 0)
    w_k = softmax(logits(x * M_k))[c]                   (the target class's probability)
    map = relu(sum_k w_k A_k), upsampled bilinearly (align_corners=False), not normalised

Choices: the authors sum w_k U_k at the input size and take the ReLU there; here the sum and its
ReLU are at the stage's resolution and then upsampled, as for every CAM of this package (the two
differ only where bilinear interpolation mixes positive and negative values of the sum). The
masked images go through the model `batch_size` at a time (a plain forward in eval mode; on the
CPU channels last), once per image whatever the number of targets. M_k depends on A_k only through
(A_k - min A_k) / (max A_k - min A_k) (bilinear upsampling commutes with A -> a A + b, a > 0), so
channels whose normalised maps are equal share one masked forward (M_k computed from that
normalised map: the same mask up to rounding).

top = n keeps the n channels of largest spatial variance of A_k (tf-keras-vis' Faster-ScoreCAM,
`max_N`); the others get weight 0. weighting = "grad_cam" is pytorch-grad-cam's `ScoreCAM`: the
target's raw score (its logit) on each masked image, and the weights a softmax of those scores
over the scored channels. pytorch-grad-cam also differs in its masks: `UpsamplingBilinear2d`
(align_corners=True), min-max with 1e-8 added to the denominator, and no skipped channels (a
constant map gives an all-zero mask whose score enters the softmax over all C channels); and it
normalises the final map to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.layout import channels_last_on_cpu
from deconvnet.core.modes import eval_function
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Rows
from deconvnet.core.validation import check_count, is_int
from deconvnet.gradient.attribute import forward_resolved, prepare
from deconvnet.gradient.gradcam import cam_at_input, check_cam_stage
from deconvnet.gradient.passes import CHUNK_SIZE

WEIGHTINGS = ("softmax", "grad_cam")
CLASS_TARGETS = (
    "None (the predicted class), a class int, a [B] tensor of classes, or a list of classes (one image)"
)


def check_scorecam_options(
    rows: Rows, target: object, batch_size: object, top: object, weighting: object
) -> None:
    """ValueError naming the argument: class targets only, batch_size and top (None or) ints >= 1,
    weighting one of WEIGHTINGS."""
    if rows.kind != "class":
        raise ValueError(f"target: Score-CAM explains class scores; expected {CLASS_TARGETS}, got {target!r}")
    check_count("batch_size", batch_size)
    if top is not None and (not is_int(top) or top < 1):
        raise ValueError(f"top: expected None (every channel) or an int >= 1, got {top!r}")
    if not isinstance(weighting, str) or weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {', '.join(map(repr, WEIGHTINGS))}, got {weighting!r}")


def upsampled(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """[n, h, w] -> [n, 1, H, W], bilinear, align_corners=False."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)


def distinct_masks(maps: Tensor, top: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The channels of one image's maps [C, h, w] that Score-CAM scores, the `top` of largest
    spatial variance (all when None) whose map is not constant -> (channels [n], their maps min-max
    normalised at the stage's resolution, each distinct one once [u, h, w], inverse [n]: each
    channel's row there). Two channels whose normalised maps are equal have the same mask (the
    upsampled map's min-max is invariant under A -> a A + b, a > 0): one masked forward serves both."""
    if top is None:
        chosen = torch.arange(maps.shape[0], device=maps.device)
    else:
        chosen = maps.flatten(1).var(1, correction=0).topk(top).indices.sort().values
    flat = maps[chosen].flatten(1)
    low, high = torch.aminmax(flat, dim=1)
    varies = high > low
    chosen, flat, low, high = chosen[varies], flat[varies], low[varies, None], high[varies, None]
    distinct, inverse = torch.unique((flat - low) / (high - low), dim=0, return_inverse=True)
    return chosen, distinct.view(-1, *maps.shape[1:]), inverse


def masked_scores(
    model: nn.Module, image: Tensor, maps: Tensor, classes: Tensor, batch_size: int, weighting: str
) -> Tensor:
    """The classes' scores on image [3, H, W] x each mask M_k = maps [n, h, w] upsampled to the
    image and min-max normalised -> [K, n] probabilities ("softmax") or logits ("grad_cam")."""
    size = tuple(image.shape[-2:])
    classes = classes.to(image.device)
    scores = []
    with eval_function(model):
        for part in maps.split(batch_size):
            up = upsampled(part, size)
            low, high = torch.aminmax(up.flatten(1), dim=1)
            span = torch.where(high > low, high - low, 1)  # > 0 but for rounding: the maps vary
            batch = image * ((up - low[:, None, None, None]) / span[:, None, None, None])
            batch = channels_last_on_cpu(batch)  # oneDNN: faster, as in the gradient pass
            logits = model(batch)
            picked = logits[:, classes]
            if weighting == "softmax":
                picked = torch.exp(picked - torch.logsumexp(logits, dim=1, keepdim=True))
            scores.append(picked)
    return torch.cat(scores).T


def channel_weights(
    model: nn.Module, image: Tensor, maps: Tensor, classes: Tensor, options: tuple[int, int | None, str]
) -> Tensor:
    """Score-CAM's channel weights of one image [3, H, W] with maps [C, h, w] for K classes ->
    [K, C]; options = (batch_size, top, weighting). 0 for channels not scored."""
    batch_size, top, weighting = options
    channels, distinct, inverse = distinct_masks(maps, top)
    weights = maps.new_zeros(len(classes), maps.shape[0])
    if len(channels) == 0:
        return weights
    scores = masked_scores(model, image, distinct, classes, batch_size, weighting)[:, inverse]
    weights[:, channels] = torch.softmax(scores, dim=1) if weighting == "grad_cam" else scores
    return weights


@full_float32()
def scorecam(
    model: nn.Module,
    images: Tensor,
    target: object = None,
    stage: int = 5,
    batch_size: int = 32,
    top: int | None = None,
    *,
    weighting: str = "softmax",
) -> Tensor:
    """Score-CAM of each class target at `stage` (module doc): images [B, 3, H, W] -> [B, H, W]
    ([K, H, W] for K classes of one image: one set of masked forwards), non-negative, not
    normalised, at the input size. stage as `gradcam` takes it; class targets only. Masked images
    go through the model `batch_size` at a time; top = n scores only the n channels of largest
    spatial variance; weighting "softmax" (the authors') or "grad_cam" (pytorch-grad-cam's)."""
    x, rows, gradient_pass = prepare(model, images, target, "backprop", CHUNK_SIZE)
    check_scorecam_options(rows, target, batch_size, top, weighting)
    stage_number, index = check_cam_stage(model, stage, rows)
    gradient_pass.keep = (index,) if stage_number is None else ()
    with torch.no_grad():
        forward, rows = forward_resolved(gradient_pass, x, rows)
        record = forward.record
        maps = record.outputs[stage_number] if stage_number is not None else record.values[index]
        if top is not None and top > maps.shape[1]:
            raise ValueError(
                f"top: expected None (every channel) or an int in 1..{maps.shape[1]} (the stage's "
                f"channels), got {top!r}"
            )
        weights = maps.new_zeros(len(rows), maps.shape[1])
        for b in rows.image.unique().tolist():
            select = (rows.image == b).to(maps.device)
            classes = rows.classes[rows.image == b]
            weights[select] = channel_weights(model, x[b], maps[b], classes, (batch_size, top, weighting))
        acts = maps[rows.image.to(maps.device)]
        out = cam_at_input((weights[:, :, None, None] * acts).sum(1, keepdim=True), tuple(x.shape[-2:]))
    return out.to(images.device)
