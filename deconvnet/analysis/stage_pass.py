"""The forward pass a dataset scan runs: the model up to its deepest chosen stage, each chosen
stage's output handed over as soon as it is computed (docs/fig2.md#the-scan-at-scale).

On VGG and AlexNet the pass runs `model.features` module by module (switched to eval for the
scan); on every other model it runs the traced graph's nodes with the model's own parameters in
their eval function (batch norm on running statistics, dropout the identity), freeing each value
as soon as no later node reads it. Neither changes the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from deconvnet.core.architecture import Stage, features_of, is_chain
from deconvnet.core.geometry import level_sizes, min_input_size, stage_sizes
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.graph_ops import forward


class StagePass:
    """The model up to the deepest of `chosen` stages, run once per batch."""

    def __init__(self, model: nn.Module, chosen: list[Stage]) -> None:
        self.model = model
        self.chosen = chosen
        self.chain = is_chain(model)
        if self.chain:
            self.layers = list(features_of(model))[: chosen[-1].index + 1]
            self.stage_at = {s.index: s.number for s in chosen}
            return
        self.graph = ModelGraph.of(model)
        self.stage_at = {self.graph.paths[s.path]: s.number for s in chosen}
        deepest = max(self.graph.position[name] for name in self.stage_at)
        self.ops = self.graph.ops[: deepest + 1]
        self.last_use = {name: i for i, op in enumerate(self.ops) for name in op.inputs}

    def run(self, x: Tensor, caller_batch: Tensor) -> Iterator[tuple[int, Tensor]]:
        """(stage number, [B, C, h, w] output) of every chosen stage for images x [B, 3, H, W],
        in order; the caller's batch is never written into."""
        if self.chain:
            for index, layer in enumerate(self.layers):
                if x is caller_batch and getattr(layer, "inplace", False):
                    x = x.clone()
                x = layer(x)
                if index in self.stage_at:
                    yield self.stage_at[index], x
            return
        values: dict[str, Tensor] = {}
        for i, op in enumerate(self.ops):
            values[op.name] = x if op.kind == "input" else forward(op, [values[n] for n in op.inputs], None)
            if op.name in self.stage_at:
                yield self.stage_at[op.name], values[op.name]
            for name in set(op.inputs):
                if self.last_use[name] == i:
                    del values[name]

    def sizes(self, height: int, width: int) -> dict[int, tuple[int, int]]:
        """Map size of every chosen stage for H x W images (a size may be 0: too small)."""
        if self.chain:
            levels = level_sizes(self.layers, height, width)
            return {s.number: levels[s.index + 1] for s in self.chosen}
        try:
            found = stage_sizes(self.model, height, width)
        except RuntimeError:  # a kernel larger than its input: the map would be empty
            return {s.number: (0, 0) for s in self.chosen}
        return {s.number: found[s.number] for s in self.chosen}

    def first_empty(self, height: int, width: int) -> str | None:
        """The first module whose map is empty for H x W images ('features[i] (Type)', or the
        deepest stage's name), or None when every chosen stage has a map."""
        if self.chain:
            levels = level_sizes(self.layers, height, width)[1:]
            empty = [i for i, (h, w) in enumerate(levels) if h < 1 or w < 1]
            return f"features[{empty[0]}] ({type(self.layers[empty[0]]).__name__})" if empty else None
        if min(min(size) for size in self.sizes(height, width).values()) < 1:
            return self.chosen[-1].name
        return None

    def min_side(self) -> int:
        """Smallest square input side for which the deepest chosen stage has a map."""
        return min_input_size(self.model, self.chosen[-1].number)

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Chain modules in training mode switched to eval inside, and back afterwards (the graph
        pass always computes the eval function and needs no switch)."""
        was_training = [layer for layer in self.layers if layer.training] if self.chain else []
        for layer in was_training:
            layer.train(False)
        try:
            yield
        finally:
            for layer in was_training:
                layer.train(True)
