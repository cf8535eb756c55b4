"""The optimisation family: images made by gradient steps on the input, on one engine.

Objectives (`objectives`), parameterisations (`params`), transforms (`transforms`), pixel
regularisers (`regularizers`) and the loop (`engine.optimize`); the methods built on them:
`visualize_filters`, `visualize_units`, `class_model`, `deep_dream`, `invert`, `fooling_image`.
"""

from deconvnet.core.probe import probe
from deconvnet.optim.class_model import class_model
from deconvnet.optim.dream import deep_dream
from deconvnet.optim.engine import STEP_RULES, Optimized, optimize
from deconvnet.optim.filters import visualize_filters, visualize_units
from deconvnet.optim.fooling import fooling_image
from deconvnet.optim.invert import invert
from deconvnet.optim.objectives import (
    Objective,
    alpha_norm,
    channel,
    class_log_probability,
    class_logit,
    energy,
    feature_match,
    l2_norm,
    lp_norm,
    total_variation,
    unit,
)
from deconvnet.optim.params import FourierImage, PixelImage
from deconvnet.optim.points import MapPoint, UnitCrop, map_point, unit_crop
from deconvnet.optim.regularizers import Blur, Clamp, ClipContribution, ClipNorm, Decay, Shrink
from deconvnet.optim.transforms import Jitter, Pad, RandomScale, standard_transforms

__all__ = [
    "class_model",
    "deep_dream",
    "fooling_image",
    "invert",
    "STEP_RULES",
    "Optimized",
    "optimize",
    "MapPoint",
    "UnitCrop",
    "map_point",
    "unit_crop",
    "visualize_filters",
    "visualize_units",
    "Objective",
    "alpha_norm",
    "channel",
    "class_log_probability",
    "class_logit",
    "energy",
    "feature_match",
    "l2_norm",
    "lp_norm",
    "total_variation",
    "unit",
    "FourierImage",
    "PixelImage",
    "probe",
    "Blur",
    "Clamp",
    "ClipContribution",
    "ClipNorm",
    "Decay",
    "Shrink",
    "Jitter",
    "Pad",
    "RandomScale",
    "standard_transforms",
]
