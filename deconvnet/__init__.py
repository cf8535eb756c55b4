"""deconvnet: Zeiler & Fergus (ECCV 2014) deconvnet visualisations, for VGG and AlexNet as in the
paper and for any CNN built from convolutions, batch norm, ReLU/ReLU6, pooling, adds and concatenations.

model = deconvnet.load_model("vgg16")                      # pretrained if cached, else random
model = deconvnet.load_model("vgg16", weights="hed")       # learned convolutions, offline
x = deconvnet.load_image("cat", model)                     # [1, 3, 224, 224]
r = deconvnet.reconstruct(model, x, stage=3, keep="max")   # [1, 3, 224, 224]
net = deconvnet.load_model("efficientnet_lite0", weights="imagenet")   # ImageNet, offline
r = deconvnet.reconstruct(net, x, stage="blocks.4", keep=[0, 1])       # any module path
g = deconvnet.attribute(model, x, target=[1, 2, 3])      # [3, 3, 224, 224], one forward pass
v = deconvnet.visualize_filters(model, 3, range(16))    # [16, 3, 128, 128], optimised together
o = deconvnet.occlusion(model, x)                        # Fig. 7 maps [1, 12, 12], incremental
top = deconvnet.scan_topk(model, batches, k=9)           # {stage: TopK [C, 9]}, one pass per batch
"""

from deconvnet.analysis.correspondence import Correspondence, correspondence
from deconvnet.analysis.faithfulness import Faithfulness, deletion, insertion
from deconvnet.analysis.invariance import Invariance, invariance
from deconvnet.analysis.occlusion import Occlusion, occlusion
from deconvnet.analysis.sanity import sanity_check
from deconvnet.analysis.scan import TopK, merge_scans, scan_topk
from deconvnet.core.architecture import STAGES, Stage, stage, stages
from deconvnet.core.display import (
    diverging_values,
    saliency_map,
    save_png,
    tile_grid,
    to_display,
    to_diverging,
    to_grayscale,
    to_pil,
)
from deconvnet.core.geometry import ReceptiveField, min_input_size, receptive_field
from deconvnet.core.graph_mirror import GraphMirror, make_mirror
from deconvnet.core.graph_ops import RULES
from deconvnet.core.mirror import Mirror, Seeds, unpool
from deconvnet.core.reconstruct import reconstruct
from deconvnet.data.datasets import NumberedBatch
from deconvnet.data.hed import HedWeightsError
from deconvnet.data.images import denormalize, load_image, preprocess
from deconvnet.data.models import (
    HED_DESCRIPTION,
    Preprocessing,
    WeightsInfo,
    WeightsUnavailableError,
    class_names,
    load_model,
    model_name,
    preprocessing,
    supported_models,
    weights_info,
    weights_label,
)
from deconvnet.data.samples import sample_names
from deconvnet.gradient import (
    METHODS,
    Channel,
    Unit,
    attribute,
    explain,
    gradcam,
    gradcam_plus_plus,
    gradient_x_image,
    guided_gradcam,
    integrated_gradients,
    layercam,
    lrp,
    scorecam,
    smoothgrad,
)
from deconvnet.optim import (
    Optimized,
    class_model,
    deep_dream,
    fooling_image,
    invert,
    optimize,
    visualize_filters,
    visualize_units,
)

__all__ = [
    "Correspondence",
    "Faithfulness",
    "deletion",
    "insertion",
    "Invariance",
    "Occlusion",
    "correspondence",
    "invariance",
    "occlusion",
    "sanity_check",
    "Optimized",
    "class_model",
    "deep_dream",
    "fooling_image",
    "invert",
    "optimize",
    "visualize_filters",
    "visualize_units",
    "METHODS",
    "Channel",
    "Unit",
    "attribute",
    "explain",
    "diverging_values",
    "gradcam",
    "gradcam_plus_plus",
    "gradient_x_image",
    "guided_gradcam",
    "integrated_gradients",
    "layercam",
    "lrp",
    "saliency_map",
    "scorecam",
    "smoothgrad",
    "to_diverging",
    "to_grayscale",
    "HED_DESCRIPTION",
    "HedWeightsError",
    "RULES",
    "STAGES",
    "GraphMirror",
    "Mirror",
    "Preprocessing",
    "ReceptiveField",
    "Seeds",
    "Stage",
    "WeightsInfo",
    "WeightsUnavailableError",
    "class_names",
    "denormalize",
    "load_image",
    "load_model",
    "make_mirror",
    "min_input_size",
    "model_name",
    "preprocess",
    "preprocessing",
    "receptive_field",
    "reconstruct",
    "sample_names",
    "save_png",
    "stage",
    "stages",
    "supported_models",
    "tile_grid",
    "to_display",
    "to_pil",
    "unpool",
    "weights_info",
    "weights_label",
    "NumberedBatch",
    "TopK",
    "merge_scans",
    "scan_topk",
]
