"""deconvnet: Zeiler & Fergus (ECCV 2014) deconvnet visualisations for torchvision VGG16 and AlexNet."""

from deconvnet.architecture import STAGES, Stage, stage, stages

__all__ = ["STAGES", "Stage", "stage", "stages"]
