"""Inverted representations (Mahendran & Vedaldi, CVPR 2015): the image whose representation at
a layer matches an image's, under a natural-image prior:

    minimise ||phi(x) - phi0||^2 / ||phi0||^2 + alpha_weight N_alpha(x / B) + tv_weight TV_beta(x / V)

with N_alpha the alpha-norm of the pixels' colour vectors and TV_beta the total variation, both
normalised per pixel (`objectives.alpha_norm`, `total_variation`). B is Mahendran & Vedaldi's
typical pixel norm, 80 grey levels, in the normalised space; V = B / 6.5 their TV bound. The
weights are ours (the paper's were tuned for its MatConvNet AlexNet): an alpha_weight that only
keeps outliers down, and small TV weights (`TV_WEIGHTS`) chosen by eye on HED VGG16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconvnet.core.precision import full_float32
from deconvnet.core.probe import POINTS_DOC, PRE, check_point, probe
from deconvnet.core.validation import check_count, check_images, check_positive, check_real
from deconvnet.data.models import preprocessing
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import check_run, model_device
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.params import PixelImage, grey_noise
from deconvnet.optim.transforms import Jitter

PIXEL_NORM_GREY_LEVELS = 80.0  # Mahendran & Vedaldi's B
# chosen by eye on HED VGG16 at 128 px, 80 steps: 1.0 at stage 5 gave a flat grey image (feature
# error 0.079), 0.05 the cat's eyes and fur (0.061); stage 4 0.5 -> 0.178, 0.1 -> 0.064
TV_WEIGHTS = {1: 0.05, 2: 0.05, 3: 0.05, 4: 0.1, 5: 0.05, "fc6": 0.05, "fc7": 0.05, "logits": 0.05}
DEFAULT_TV_WEIGHT = 0.05  # any other point (a module path)


def _check_invert(
    model: nn.Module, image: object, stage: object, tv_weight: object, alpha_weight: object
) -> tuple[int | str, Tensor, float]:
    """`invert`'s arguments checked, in its order (ValueError naming the argument) -> (the point,
    image [1, 3, H, W], the TV weight: TV_WEIGHTS of the stage when None)."""
    point = check_point(model, stage)
    if point == "input":
        raise ValueError(f"stage: 'input' has nothing to invert; expected {POINTS_DOC}")
    depth = int(point[3:]) if point in PRE else point  # "pre3": stage 3's depth
    bounded = None if depth in TV_WEIGHTS and not isinstance(depth, int) else depth  # not the head
    image = check_images(image, model, "image", bounded)
    if image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got a batch of {image.shape[0]}")
    default = TV_WEIGHTS.get(depth, DEFAULT_TV_WEIGHT)
    tv_weight = default if tv_weight is None else check_real("tv_weight", tv_weight)
    check_real("alpha_weight", alpha_weight)
    return point, image, tv_weight


def _check_priors(alpha: object, beta: object, jitter: object) -> None:
    """The priors' exponents (finite numbers > 0) and the jitter (an int >= 0), ValueError
    naming the argument."""
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    check_count("jitter", jitter, low=0)


def _invert_objective(
    point: int | str,
    phi0: Tensor,
    alpha: object,
    beta: object,
    alpha_weight: float,
    tv_weight: float,
    bound: float,
) -> obj.Objective:
    """The feature match to phi0 (the image's representation at `point`) minus the alpha-norm and
    TV priors (pixel norm `bound`, TV bound bound / 6.5); alpha and beta checked here."""
    return (
        obj.feature_match(point, phi0)
        - alpha_weight * obj.alpha_norm(check_real("alpha", alpha), bound)
        - tv_weight * obj.total_variation(check_real("beta", beta), bound / 6.5)
    )


def _feature_error(model: nn.Module, images: Tensor, point: int | str, phi0: Tensor) -> float:
    """||phi(x) - phi0||^2 / ||phi0||^2 of the one image [1, 3, H, W] at `point`."""
    with torch.no_grad():
        error = -obj.feature_match(point, phi0)(probe(model, images, [point]))
    return float(error[0])


@full_float32()
def invert(
    model: nn.Module,
    image: Tensor,
    stage: int | str,
    steps: int = 200,
    lr: float = 0.05,
    alpha: float = 6.0,
    beta: float = 2.0,
    alpha_weight: float = 1e-4,
    tv_weight: float | None = None,
    jitter: int = 0,
    seed: int = 0,
    progress: bool = False,
    details: bool = False,
) -> Tensor | Optimized:
    """Invert `image` [1, 3, H, W] (normalised) from its representation at `stage` (any point of
    `deconvnet.core.probe` but "input": 1..5, a stage name, a module path, "pre1".."pre5" before
    the stage's ReLU, "logits", "fc6" / "fc7" on VGG) -> [1, 3, H, W] in the normalised space.

    Adam with a cosine-decayed rate from grey noise (seeded); tv_weight None takes TV_WEIGHTS of
    the stage. details=True returns the Optimized; its report has "feature_error", the final
    ||phi(x) - phi0||^2 / ||phi0||^2.
    """
    point, image, tv_weight = _check_invert(model, image, stage, tv_weight, alpha_weight)
    _check_priors(alpha, beta, jitter)
    seed = check_run(steps, lr, seed, progress=progress, details=details)
    prep, (device, dtype) = preprocessing(model), model_device(model)
    image = image.detach().to(device=device, dtype=dtype)
    with torch.no_grad():
        phi0 = probe(model, image, [point])[point]
    bound = PIXEL_NORM_GREY_LEVELS / 255.0 / (sum(prep.std) / 3)
    objective = _invert_objective(point, phi0, alpha, beta, alpha_weight, tv_weight, bound)
    start = grey_noise(tuple(image.shape), prep, torch.Generator().manual_seed(seed))
    param = PixelImage(start.to(device=device, dtype=dtype))
    result = optimize(
        model,
        objective,
        param,
        steps=steps,
        lr=lr,
        step_rule="adam",
        schedule="cosine",
        transforms=[Jitter(jitter)] if jitter else [],
        seed=seed,
        progress=progress,
        description=f"invert {point}",
    )
    result.report["feature_error"] = _feature_error(model, result.images, point, phi0)
    result.settings.update(
        method="invert",
        stage=point,
        alpha=alpha,
        beta=beta,
        alpha_weight=alpha_weight,
        tv_weight=tv_weight,
        bound=bound,
        tv_bound=bound / 6.5,
        jitter=jitter,
    )
    return result if details else result.images
