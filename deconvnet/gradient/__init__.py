"""The gradient family: class-score and unit maps through the whole network (docs/methods.md#gradient-family).

attribute (gradient / guided backprop / deconvnet), gradient_x_image, smoothgrad,
integrated_gradients, gradcam, guided_gradcam, gradcam_plus_plus, layercam, scorecam, lrp: one contract,
many targets from one forward pass.
"""

from deconvnet.core.targets import Channel, Unit
from deconvnet.gradient.attribute import attribute, gradient_x_image
from deconvnet.gradient.gradcam import gradcam, guided_gradcam
from deconvnet.gradient.gradcam_plus_plus import gradcam_plus_plus
from deconvnet.gradient.integrated import integrated_gradients
from deconvnet.gradient.layercam import layercam
from deconvnet.gradient.lrp import lrp
from deconvnet.gradient.methods import CAM_METHODS, METHODS, explain
from deconvnet.gradient.scorecam import scorecam
from deconvnet.gradient.smoothgrad import smoothgrad

__all__ = [
    "CAM_METHODS",
    "METHODS",
    "Channel",
    "Unit",
    "explain",
    "attribute",
    "gradcam",
    "gradcam_plus_plus",
    "gradient_x_image",
    "guided_gradcam",
    "integrated_gradients",
    "layercam",
    "lrp",
    "scorecam",
    "smoothgrad",
]
