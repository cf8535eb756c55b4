"""The mirror continued above `model.features`: adaptive average pooling, flatten, classifier.

torchvision's VGG16 and AlexNet compute `classifier(flatten(avgpool(features(x))))`. Mirrored from
the logits down (the same rules as the deconvnet below it):

    forward Linear               ->  its tied transpose (the SAME weight, no bias): g @ W
    forward ReLU                 ->  the rule's backward ReLU (deconvnet | backprop | guided)
    forward Dropout              ->  the identity (the model's eval-mode function, always)
    forward flatten              ->  view back to [C, 7, 7] (AlexNet [C, 6, 6])
    forward AdaptiveAvgPool2d    ->  its exact adjoint at the actual map size (`avg_pool_adjoint`)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.architecture import architecture_name
from deconvnet.core.graph_ops import avg_pool_adjoint
from deconvnet.core.mirror import check_rule
from deconvnet.core.targets import class_count

HEAD_MODULES = (nn.Linear, nn.ReLU, nn.Dropout)


@dataclass
class HeadRecord:
    """What the forward pass above `features` leaves for the mirror.

    size: (h, w) of the features output; logits [B, classes];
    masks: classifier index -> [B, F] bool, input of that ReLU > 0
    """

    size: tuple[int, int]
    logits: Tensor
    masks: dict[int, Tensor] = field(default_factory=dict)


class HeadMirror:
    """avgpool + classifier of a torchvision VGG / AlexNet, forward and mirrored.

    The model's own parameters are read at call time; nothing is copied, hooked or changed.
    """

    def __init__(self, model: nn.Module, rule: str = "backprop") -> None:
        architecture_name(model)
        self.rule = check_rule(rule)
        pool = model.avgpool
        if not isinstance(pool, nn.AdaptiveAvgPool2d):
            raise ValueError(
                f"model.avgpool: {type(pool).__name__} has no mirror (supported: AdaptiveAvgPool2d)"
            )
        size = pool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if None in size:
            raise ValueError(
                f"model.avgpool: output_size {pool.output_size} with None is not supported; give both sides"
            )
        self.pool_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.layers = list(model.classifier)
        for i, m in enumerate(self.layers):
            if not isinstance(m, HEAD_MODULES):
                raise ValueError(
                    f"model.classifier[{i}]: {type(m).__name__} has no mirror "
                    "(supported: Linear, ReLU, Dropout)"
                )
        self.classes = class_count(model)

    def record(self, features_out: Tensor) -> HeadRecord:
        """[B, C, h, w] features output -> HeadRecord with the logits [B, classes]."""
        record = HeadRecord(size=tuple(features_out.shape[-2:]), logits=features_out)
        h = F.adaptive_avg_pool2d(features_out, self.pool_size).flatten(1)
        for i, m in enumerate(self.layers):
            if isinstance(m, nn.Linear):
                h = F.linear(h, m.weight, m.bias)
            elif isinstance(m, nn.ReLU):
                if self.rule != "deconvnet":
                    record.masks[i] = h > 0
                h = F.relu(h)
        record.logits = h
        return record

    def run(self, seed: Tensor, record: HeadRecord, image: Tensor) -> Tensor:
        """seed [M, classes] (signal on the logits of image `image[m]`) -> [M, C, h, w] at the
        features output."""
        g = seed
        for i in reversed(range(len(self.layers))):
            m = self.layers[i]
            if isinstance(m, nn.Linear):
                g = g @ m.weight
            elif isinstance(m, nn.ReLU):
                if self.rule != "backprop":
                    g = F.relu(g)
                if self.rule != "deconvnet":
                    g = g * record.masks[i][image.to(g.device)]
        g = g.view(g.shape[0], -1, *self.pool_size)
        return avg_pool_adjoint(g, record.size)
