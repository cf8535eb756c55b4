"""The eval function of a model without changing the caller's model: every module switched to eval
mode for the duration of a computation, each module's own training flag restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_function(model: nn.Module) -> Iterator[None]:
    """The model in eval mode inside (Dropout as the identity, batch norm's running statistics);
    every module's own training flag restored afterwards, also on an error."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
