"""The gradient family: class-score and unit maps through the whole network (docs/methods.md#gradient-family).

attribute (gradient / guided backprop / deconvnet), gradient_x_image, smoothgrad,
integrated_gradients, gradcam, guided_gradcam: one contract, many targets from one forward pass.
"""

from deconvnet.core.targets import Channel, Unit
from deconvnet.gradient.attribute import attribute, gradient_x_image
from deconvnet.gradient.gradcam import gradcam, guided_gradcam
from deconvnet.gradient.integrated import integrated_gradients
from deconvnet.gradient.methods import METHODS, explain
from deconvnet.gradient.smoothgrad import smoothgrad

__all__ = [
    "METHODS",
    "Channel",
    "Unit",
    "explain",
    "attribute",
    "gradcam",
    "gradient_x_image",
    "guided_gradcam",
    "integrated_gradients",
    "smoothgrad",
]
