"""A model as the mirror sees it: its traced graph (torch.fx), one `Op` per node, checked before use.

`model_graph(model)` traces the model once (timm's own untraceable modules, such as `Conv2dSame`
and `BatchNormAct2d`, stay whole), and turns every node into an `Op` of a known kind: convolution,
batch norm, ReLU / ReLU6, max / average pooling, residual add, concatenation, flatten, linear,
identity (dropout, `nn.Identity`), and the few affine pieces a model applies to its input
(indexing, unsqueeze, a product with a constant, a constant shift). Any other node is a
ValueError naming its module path and type (docs/graph.md), before any heavy work.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from deconvnet.core.modes import eval_function

LINEAR_KINDS = ("identity", "flatten", "getitem", "unsqueeze", "scale", "shift")
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
CAT_FUNCTIONS = (torch.cat, torch.concat)
FLATTEN_FUNCTIONS = (torch.flatten,)
SUPPORTED = (
    "Conv2d, BatchNorm2d, ReLU, ReLU6 (modules or functions), MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d, residual add, torch.cat, flatten, Linear, Dropout, Identity, "
    "timm's Conv2dSame and BatchNormAct2d"
)


@dataclass
class Op:
    """One node of the traced graph: `kind`, the names of its tensor `inputs`, the forward
    `module` (or None), the module path it sits in (`path`, '' at the top), constants in `args`."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    module: nn.Module | None = None
    path: str = ""
    scopes: tuple[str, ...] = ()
    args: dict = field(default_factory=dict)


def timm_leaf_types() -> tuple[type, ...]:
    """timm's modules that do not trace (dynamic padding, fused norm + activation); () without timm."""
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame
    except ImportError:  # timm is a dependency; a user's environment may still lack it
        return ()
    return (Conv2dSame, BatchNormAct2d)


class LeafTracer(fx.Tracer):
    """torch.fx's tracer with timm's untraceable modules kept whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, timm_leaf_types()) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    """The model's forward as an fx.Graph (traced in eval mode: the mirror is of the eval function);
    every module's own training flag is restored afterwards."""
    try:
        with eval_function(model):
            return LeafTracer().trace(model)
    except Exception as error:  # torch.fx raises many types: say what failed and why
        raise ValueError(
            f"model: {type(model).__name__} could not be traced with torch.fx ({type(error).__name__}: "
            f"{error}); the mirror needs a traceable model built from {SUPPORTED}"
        ) from error


def node_scopes(node: fx.Node) -> tuple[str, ...]:
    """Module paths enclosing `node`, outermost first (from torch.fx's nn_module_stack)."""
    stack = node.meta.get("nn_module_stack") or {}
    return tuple(path for path, _ in stack.values())


def describe(node: fx.Node, model: nn.Module) -> str:
    """'layer1.0.relu (ReLU)' or 'function gelu in layer1.0': for error messages."""
    if node.op == "call_module":
        return f"{node.target} ({type(model.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    scopes = node_scopes(node)
    where = f" in {scopes[-1]}" if scopes else ""
    return f"{node.op.replace('call_', '')} {target}{where} (node {node.name})"


def unsupported(node: fx.Node, model: nn.Module, why: str = "") -> ValueError:
    """The error for a node the mirror has no adjoint for."""
    reason = f": {why}" if why else ""
    return ValueError(
        f"model: {describe(node, model)} has no deconvnet mirror{reason} (supported: {SUPPORTED})"
    )


def module_kind(module: nn.Module) -> str | None:
    """The Op kind of a leaf module, or None when the mirror has no adjoint for it."""
    leaves = timm_leaf_types()
    if leaves and isinstance(module, leaves[0]):
        return "conv_same"
    if leaves and isinstance(module, leaves[1]):
        return "bn_act"
    kinds = (
        (nn.Conv2d, "conv"),
        (nn.BatchNorm2d, "bn"),
        (nn.ReLU, "relu"),
        (nn.ReLU6, "relu6"),
        (nn.MaxPool2d, "maxpool"),
        (nn.AvgPool2d, "avgpool"),
        (nn.AdaptiveAvgPool2d, "adaptive_avgpool"),
        (nn.Flatten, "flatten"),
        (nn.Linear, "linear"),
        ((nn.Dropout, nn.Dropout2d, nn.Identity), "identity"),
    )
    for types, kind in kinds:
        if isinstance(module, types):
            return kind
    if type(module) is nn.Hardtanh and (module.min_val, module.max_val) == (0.0, 6.0):
        return "relu6"
    return None


def activation_kind(module: nn.Module) -> str | None:
    """'relu', 'relu6' or 'identity' for the activation inside timm's BatchNormAct2d."""
    kind = module_kind(module)
    return kind if kind in ("relu", "relu6", "identity") else None


def check_module(node: fx.Node, module: nn.Module, kind: str, model: nn.Module) -> None:
    """ValueError for module settings the mirror does not cover (before any heavy work)."""
    if kind in ("conv", "conv_same") and module.padding_mode != "zeros":
        raise unsupported(node, model, f"padding_mode={module.padding_mode!r} (only 'zeros')")
    if kind == "conv" and isinstance(module.padding, str) and module.padding != "valid":
        raise unsupported(node, model, f"padding={module.padding!r} (give integer padding)")
    if kind in ("bn", "bn_act") and (module.running_mean is None or module.running_var is None):
        raise unsupported(node, model, "batch norm without running statistics")
    if kind == "bn_act":
        if activation_kind(module.act) is None or not isinstance(module.drop, (nn.Identity, nn.Dropout)):
            raise unsupported(node, model, f"activation {type(module.act).__name__} inside")
    if kind == "maxpool" and module.return_indices:
        raise unsupported(node, model, "return_indices=True")


def module_op(node: fx.Node, model: nn.Module) -> Op:
    """The Op of a call_module node."""
    module = model.get_submodule(node.target)
    kind = module_kind(module)
    if kind is None:
        raise unsupported(node, model)
    check_module(node, module, kind, model)
    args: dict = {}
    if kind == "bn_act":
        args["act"] = activation_kind(module.act)
    if kind == "flatten":
        args.update(start=module.start_dim, end=module.end_dim)
    if kind == "adaptive_avgpool":
        args["size"] = module.output_size
    return Op(node.name, kind, tensor_inputs(node), module, str(node.target), node_scopes(node), args)


def tensor_inputs(node: fx.Node) -> tuple[str, ...]:
    """Names of the nodes among `node`'s arguments, in order (nested lists flattened)."""
    found: list[str] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n.name))
    return tuple(found)


def number(value: object) -> bool:
    """Whether `value` is a plain Python number (a constant of the graph)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def arg(node: fx.Node, position: int, key: str, default: object = None) -> object:
    """A call's argument by position or keyword."""
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(key, default)


def function_kind(node: fx.Node) -> tuple[str | None, dict]:
    """(kind, constants) of a call_function / call_method node; (None, {}) when not supported."""
    target, first, second = node.target, arg(node, 0, "input"), arg(node, 1, "other")
    method = target if node.op == "call_method" else None
    if target in RELU_FUNCTIONS or method in ("relu", "relu_"):
        return "relu", {}
    if target is F.relu6:
        return "relu6", {}
    if target is F.hardtanh and (arg(node, 1, "min_val", -1.0), arg(node, 2, "max_val", 1.0)) == (0.0, 6.0):
        return "relu6", {}
    if target in ADD_FUNCTIONS or method in ("add", "add_"):
        if node.kwargs.get("alpha", 1) != 1:
            return None, {}
        tensors = [isinstance(a, fx.Node) for a in (first, second)]
        if all(tensors):
            return "add", {}
        if any(tensors) and (number(first) or number(second)):
            return "shift", {"constant": first if number(first) else second}
        return None, {}
    if target in (operator.mul, torch.mul, operator.truediv) or method in ("mul", "div"):
        factor = second if isinstance(first, fx.Node) else first
        if not number(factor) or (target is operator.truediv and not isinstance(first, fx.Node)):
            return None, {}
        return "scale", {"factor": 1.0 / factor if target is operator.truediv or method == "div" else factor}
    if target in CAT_FUNCTIONS:
        dim = arg(node, 1, "dim", 0)
        return ("cat", {}) if dim in (1, -3) else (None, {})
    if target in FLATTEN_FUNCTIONS or method == "flatten":
        return "flatten", {"start": arg(node, 1, "start_dim", 0), "end": arg(node, 2, "end_dim", -1)}
    if target is F.adaptive_avg_pool2d:
        return "adaptive_avgpool", {"size": arg(node, 1, "output_size")}
    if target is F.dropout:
        return "identity", {}
    if target is operator.getitem and isinstance(first, fx.Node):
        return "getitem", {"index": second}
    if target is torch.unsqueeze or method == "unsqueeze":
        return "unsqueeze", {"dim": arg(node, 1, "dim")}
    return None, {}


def node_op(node: fx.Node, model: nn.Module) -> Op:
    """The Op of any node of the traced graph; ValueError naming the node when unsupported."""
    if node.op == "placeholder":
        return Op(node.name, "input", ())
    if node.op == "output":
        if not isinstance(node.args[0], fx.Node):
            raise ValueError(f"model: its forward returns {type(node.args[0]).__name__}, not one tensor")
        return Op(node.name, "output", (node.args[0].name,))
    if node.op == "call_module":
        return module_op(node, model)
    if node.op in ("call_function", "call_method"):
        kind, args = function_kind(node)
        if kind is None:
            raise unsupported(node, model)
        scopes = node_scopes(node)
        return Op(node.name, kind, tensor_inputs(node), None, scopes[-1] if scopes else "", scopes, args)
    raise unsupported(node, model)
