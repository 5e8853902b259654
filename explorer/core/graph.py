"""Channel groups through the traced graph: which channels must be removed together.

Structured (channel) pruning removes an output channel of a layer, so every tensor that carries
that channel must lose it too: the BatchNorm after it, the skip connection it is added to, the
other convs writing into the same residual sum, and the input columns of every layer that reads
it. DepGraph (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023) collects these
couplings from the computational graph; this module does the same on a ``torch.fx`` trace with a
union-find over *channel spaces*: each Conv/Linear output opens a space, ops that keep channels
apart (BatchNorm, pooling, activations, flatten...) pass it on, and elementwise ops between two
traced tensors merge their spaces. Any op the analysis does not understand (cat, split,
transpose, attention, LayerNorm, indexing...) and the model output mark the spaces that reach it
as not prunable, with a reason naming the op and node, instead of computing something wrong.
"""

from __future__ import annotations

import operator
import threading
from dataclasses import dataclass, field
from math import prod
from typing import Any, NamedTuple, Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from prunescope.explorer.core.forward import eval_mode


class Member(NamedTuple):
    """One tensor indexed by a group's channels: ``param`` sliced along ``dim``.

    ``block`` is how many consecutive entries of that dimension each channel occupies (a Linear
    after ``flatten`` of a (C, H, W) map reads channel c as features ``[c*H*W, (c+1)*H*W)``).
    """

    param: str
    dim: int
    block: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together, and every parameter/buffer indexed by them.

    ``producers``: Conv/Linear weights whose output channels (dim 0) are these channels;
    ``consumers``: Conv/Linear weights reading them as inputs (dim 1, with ``block`` features per
    channel); ``followers``: tensors sliced along dim 0 with them (producer biases, BatchNorm
    affine parameters and running statistics, depthwise conv weights and biases).
    ``prunable`` is False, with ``reason``, when the channels reach the model output or an op the
    analysis does not understand.
    """

    index: int
    channels: int
    producers: tuple[Member, ...]
    consumers: tuple[Member, ...]
    followers: tuple[Member, ...]
    prunable: bool
    reason: str = ""

    def describe(self) -> str:
        """One line for UIs: size, who writes and reads the channels, prunable or why not."""
        def names(members: tuple[Member, ...]) -> str:
            return ", ".join(m.param.removesuffix(".weight") + (f" (x{m.block})" if m.block > 1 else "")
                             for m in members) or "nothing"
        status = "prunable" if self.prunable else f"kept dense: {self.reason}"
        return (f"group {self.index}: {self.channels} channels written by {names(self.producers)}, "
                f"read by {names(self.consumers)}; {status}")


class _Tag(NamedTuple):
    """Where a traced tensor carries a space's channels: dimension ``dim``, ``block`` entries each."""

    space: int
    dim: int
    block: int


@dataclass
class _Space:
    channels: int
    order: int
    producers: list[Member] = field(default_factory=list)
    consumers: list[Member] = field(default_factory=list)
    followers: list[Member] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


_UNARY = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
    "hardtanh", "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "softsign", "logsigmoid",
    "tanhshrink", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "abs", "neg", "exp", "square", "sqrt", "rsqrt", "clamp", "clip",
    "contiguous", "clone", "detach", "float", "double", "half", "to", "sign", "erf",
})
_BINARY = frozenset({
    "add", "add_", "iadd", "sub", "sub_", "isub", "mul", "mul_", "imul", "truediv", "div", "div_",
    "itruediv", "maximum", "minimum", "pow",
})
_REDUCE = frozenset({"mean", "sum", "amax", "amin"})
_POOL_FUNCS = {f"{kind}_pool{n}d": n for kind in ("max", "avg", "adaptive_avg", "adaptive_max") for n in (1, 2, 3)}
_SHAPE_ATTRS = frozenset({"dtype", "device", "ndim", "is_cuda", "requires_grad"})
_UNARY_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_POOL_MODULES = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2,
    nn.AvgPool3d: 3, nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _flat_nodes(value: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(value, out.append)
    return out


def _arg(node: fx.Node, pos: int, name: str, default: Any = None) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} {node.target!r}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    module = {"_operator": "operator", "builtins": ""}.get(module, module)
    name = getattr(target, "__name__", str(target))
    return f"{module}.{name}" if module else name


def _merged_range(before: tuple[int, ...], after: tuple[int, ...]) -> tuple[int, int] | None:
    """``(start, end)`` if ``after`` is ``before`` with dims ``start..end`` merged into one, else None."""
    extra = len(before) - len(after)
    for start in range(len(after) if extra >= 0 else 0):
        end = start + extra  # inclusive
        if before[:start] == after[:start] and before[end + 1 :] == after[start + 1 :] \
                and prod(before[start : end + 1]) == after[start]:
            return start, end
    return None


class _Analysis:
    """One pass over the traced graph in topological order, building the channel spaces."""

    def __init__(self, gm: fx.GraphModule, params: set[str]) -> None:
        self.modules = dict(gm.named_modules())
        self.params = params
        self.parent: list[int] = []
        self.spaces: list[_Space] = []
        self.tags: dict[fx.Node, _Tag] = {}
        self.shape_of: dict[fx.Node, tuple[_Tag, int]] = {}  # shape nodes: (tensor's tag, its rank)
        self.owner: dict[tuple[str, int], int] = {}  # (tensor, dim) -> space
        self.module_space: dict[str, int] = {}  # a producer module's output space (weight sharing)

    # -- union-find ------------------------------------------------------------------------
    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def new_space(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(_Space(channels=channels, order=len(self.spaces)))
        return len(self.spaces) - 1

    def mark(self, s: int, reason: str) -> None:
        space = self.spaces[self.find(s)]
        if reason not in space.reasons:
            space.reasons.append(reason)

    def union(self, a: int, b: int, why: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        sa, sb = self.spaces[ra], self.spaces[rb]
        if sa.channels != sb.channels:
            reason = f"{why} ties {sa.channels} channels to {sb.channels}"
            self.mark(ra, reason)
            self.mark(rb, reason)
            return ra
        if sb.order < sa.order:
            ra, rb, sa, sb = rb, ra, sb, sa
        self.parent[rb] = ra
        for kind in ("producers", "consumers", "followers", "reasons"):
            getattr(sa, kind).extend(x for x in getattr(sb, kind) if x not in getattr(sa, kind))
        return ra

    def add(self, s: int, kind: str, member: Member, why: str) -> int:
        """Register ``member`` with space ``s``; a tensor dim already in another space merges them."""
        key = (member.param, member.dim)
        if key in self.owner:
            s = self.union(self.owner[key], s, f"{member.param} (shared by {why})")
        self.owner[key] = self.find(s)
        members = getattr(self.spaces[self.find(s)], kind)
        if member not in members:
            members.append(member)
        return self.find(s)

    def opaque(self, node: fx.Node, what: str) -> None:
        """Every traced input of ``node`` reaches something not understood: not prunable."""
        for arg in _flat_nodes((node.args, node.kwargs)):
            if arg in self.tags:
                self.mark(self.tags[arg].space, f"passes through {what} at node {node.name!r}")
            if arg in self.shape_of:
                self.mark(self.shape_of[arg][0].space, f"its shape is used by {what} at node {node.name!r}")

    # -- the pass --------------------------------------------------------------------------
    def run(self, graph: fx.Graph) -> None:
        for node in graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                for arg in _flat_nodes(node.args):
                    if arg in self.tags:
                        self.mark(self.tags[arg].space, f"reaches the model output at node {arg.name!r}")
                continue
            what = _op_name(node, self.modules)
            if not any(a in self.tags or a in self.shape_of for a in _flat_nodes((node.args, node.kwargs))) \
                    and node.op != "call_module":
                continue  # nothing traced flows in: nothing to learn
            problem = self.visit(node)
            if problem is not None:
                self.opaque(node, f"{what} ({problem})" if problem else what)

    def visit(self, node: fx.Node) -> str | None:
        """Set ``self.tags[node]``; return None when understood, else a detail for the reason."""
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        name = name.lstrip("_") if node.op == "call_function" else name
        x = node.args[0] if node.args else None
        tag = self.tags.get(x) if isinstance(x, fx.Node) else None
        if node.target is getattr and tag is not None:
            attr = node.args[1]
            if attr == "shape":
                self.shape_of[node] = (tag, len(_shape(x)))
                return None
            return None if attr in _SHAPE_ATTRS else f"attribute .{attr}"
        if node.target is operator.getitem and x in self.shape_of:
            return self.visit_shape_item(node)
        if name == "size" and tag is not None and node.op == "call_method":
            if len(node.args) < 2:
                self.shape_of[node] = (tag, len(_shape(x)))
                return None
            d = node.args[1] % len(_shape(x))
            return "reads the channel count" if d == tag.dim and node.users else None
        if name == "dim" and node.op == "call_method":
            return None
        if tag is None and name not in _BINARY:
            return ""
        if name in _UNARY:
            return self.passthrough(node, tag)
        if name in _BINARY:
            return self.elementwise(node)
        if name in _POOL_FUNCS:
            return self.pool(node, tag, _POOL_FUNCS[name])
        if name == "interpolate":
            return self.pool(node, tag, len(_shape(x)) - 2)
        if name in _REDUCE:
            return self.reduce(node, tag)
        if name == "flatten":
            rank = len(_shape(x))
            start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
            return self.flatten(node, tag, start % rank, end % rank)
        if name in ("view", "reshape"):
            return self.reshape(node, tag)
        return ""

    def visit_shape_item(self, node: fx.Node) -> str | None:
        (src, rank), index = self.shape_of[node.args[0]], node.args[1]
        dims = range(rank)[index] if isinstance(index, slice) else [index % rank] if isinstance(index, int) else None
        if dims is None:
            return "indexes a shape"
        if src.dim in dims and node.users:
            return "reads the channel count"
        return None

    def passthrough(self, node: fx.Node, tag: _Tag) -> str | None:
        before, after = _shape(node.args[0]), _shape(node)
        others = [a for a in _flat_nodes((node.args[1:], node.kwargs)) if _shape(a) is not None]
        if others:
            return f"also reads tensor {others[0].name!r}"
        if after is None or before != after:
            return f"changes the shape {before} -> {after}"
        self.tags[node] = tag
        return None

    def elementwise(self, node: fx.Node) -> str | None:
        out = _shape(node)
        if out is None:
            return ""
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        tagged = [a for a in operands if a in self.tags]
        if not tagged:
            return ""
        first = self.tags[tagged[0]]
        back = first.dim - len(_shape(tagged[0]))  # channel dim counted from the end (broadcasting)
        for a in operands:
            shape = _shape(a)
            if shape is None:
                continue  # a number (the op ran in shape propagation): broadcast to every channel
            if a in self.tags:
                t = self.tags[a]
                if t.dim - len(shape) != back or t.block != first.block or shape[t.dim] != out[back]:
                    return f"combines different channel layouts ({a.name!r})"
            elif len(shape) + back >= 0 and shape[len(shape) + back] != 1:
                return f"combined with {a.name!r}, a tensor whose channels are not traced to a layer"
        space = first.space
        for a in tagged[1:]:
            space = self.union(space, self.tags[a].space, f"{node.name!r}")
        self.tags[node] = _Tag(space, len(out) + back, first.block)
        return None

    def pool(self, node: fx.Node, tag: _Tag, spatial: int) -> str | None:
        """Pooling/resizing over the last ``spatial`` dims: channels untouched if not among them."""
        before, after = _shape(node.args[0]), _shape(node)
        if after is None:
            return "returns more than one tensor"
        if tag.block != 1 or tag.dim >= len(before) - spatial or len(after) != len(before) \
                or after[tag.dim] != before[tag.dim]:
            return "pools over the channel dimension"
        self.tags[node] = tag
        return None

    def reduce(self, node: fx.Node, tag: _Tag) -> str | None:
        rank = len(_shape(node.args[0]))
        dims = _arg(node, 1, "dim", None)
        keep = _arg(node, 2, "keepdim", False)
        if dims is None or (isinstance(dims, (list, tuple)) and not dims):
            return "reduces over every dimension"
        dims = {d % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
        if tag.dim in dims:
            return "reduces over the channel dimension"
        shift = 0 if keep else sum(d < tag.dim for d in dims)
        self.tags[node] = _Tag(tag.space, tag.dim - shift, tag.block)
        return None

    def flatten(self, node: fx.Node, tag: _Tag, start: int, end: int) -> str | None:
        shape = _shape(node.args[0])
        if end < tag.dim:
            self.tags[node] = _Tag(tag.space, tag.dim - (end - start), tag.block)
        elif start > tag.dim or start == end:
            self.tags[node] = tag
        elif prod(shape[start : tag.dim]) != 1:
            return f"merges dims {start}..{end} of {shape}, repeating the channels"
        else:
            self.tags[node] = _Tag(tag.space, start, tag.block * prod(shape[tag.dim + 1 : end + 1]))
        return None

    def reshape(self, node: fx.Node, tag: _Tag) -> str | None:
        before, after = _shape(node.args[0]), _shape(node)
        if after is None:
            return ""
        if before == after:
            self.tags[node] = tag
            return None
        merged = _merged_range(before, after)
        if merged is None:
            return f"reshapes {before} to {after}"
        return self.flatten(node, tag, *merged)

    def pinned(self, node: fx.Node, channels: int, dim: int) -> _Tag:
        """A tag for a layer's input whose channels no traced layer writes: never prunable."""
        space = self.new_space(channels)
        self.mark(space, f"{node.target} reads channels not written by a traced layer at node {node.name!r}")
        return _Tag(space, dim, 1)

    def visit_module(self, node: fx.Node, mod: nn.Module) -> str | None:
        x = node.args[0] if node.args else None
        tag = self.tags.get(x) if isinstance(x, fx.Node) else None
        target = node.target
        if isinstance(mod, (nn.Linear, *_CONVS, *_NORMS)) and tag is None:
            if _shape(x) is None or _shape(node) is None:
                return ""
            if isinstance(mod, _CONVS) and mod.groups > 1 and mod.groups != mod.in_channels:
                pass  # grouped conv: its input is never traced
            elif isinstance(mod, nn.Linear):
                tag = self.pinned(node, mod.in_features, len(_shape(x)) - 1)
            else:
                tag = self.pinned(node, mod.num_features if isinstance(mod, _NORMS) else mod.in_channels, 1)
        if isinstance(mod, (nn.Linear, *_CONVS)):
            if f"{target}.weight" not in self.params:
                return "its weight is shared with another module"
            return self.visit_layer(node, mod, tag)
        if tag is None:
            return None if isinstance(mod, (*_UNARY_MODULES, nn.Flatten, nn.Upsample, *_POOL_MODULES)) else ""
        if isinstance(mod, _UNARY_MODULES):
            return self.passthrough(node, tag)
        if isinstance(mod, _NORMS):
            if tag.dim != 1 or tag.block != 1 or mod.num_features != self.channels(tag):
                return "normalises a dimension other than the channels"
            space = tag.space
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(mod, attr, None) is not None:
                    space = self.add(space, "followers", Member(f"{target}.{attr}", 0), f"{target!r}")
            self.tags[node] = _Tag(space, 1, 1)
            return None
        if isinstance(mod, nn.Flatten):
            rank = len(_shape(x))
            return self.flatten(node, tag, mod.start_dim % rank, mod.end_dim % rank)
        if type(mod) in _POOL_MODULES:
            return self.pool(node, tag, _POOL_MODULES[type(mod)])
        if isinstance(mod, nn.Upsample):
            return self.pool(node, tag, len(_shape(x)) - 2)
        return ""

    def channels(self, tag: _Tag) -> int:
        return self.spaces[self.find(tag.space)].channels

    def visit_layer(self, node: fx.Node, mod: nn.Module, tag: _Tag | None) -> str | None:
        """Conv/Linear: consumer of its input's channels, producer of a new space (or depthwise pass)."""
        target, out = node.target, _shape(node)
        weight = f"{target}.weight"
        bias = f"{target}.bias" if getattr(mod, "bias", None) is not None else None
        kind = type(mod).__name__
        if isinstance(mod, nn.Linear):
            out_dim = len(out) - 1
            if tag.dim != len(_shape(node.args[0])) - 1 or self.channels(tag) * tag.block != mod.in_features:
                return f"reads {mod.in_features} features along its last dimension, not the traced channels"
        else:
            out_dim = 1
            if mod.groups > 1 and not mod.groups == mod.in_channels == mod.out_channels:
                space = self.new_space(mod.out_channels)
                self.mark(space, f"written by grouped {kind} {target!r} (groups={mod.groups})")
                self.add(space, "producers", Member(weight, 0), f"{target!r}")
                self.tags[node] = _Tag(space, 1, 1)
                return None if tag is None else f"groups={mod.groups}"
            if tag.dim != 1 or tag.block != 1 or self.channels(tag) != mod.in_channels:
                return f"reads {mod.in_channels} channels along dim 1, not the traced channels"
            if mod.groups > 1:  # depthwise: channel c in, channel c out
                space = self.add(tag.space, "followers", Member(weight, 0), f"{target!r}")
                if bias is not None:
                    space = self.add(space, "followers", Member(bias, 0), f"{target!r}")
                self.tags[node] = _Tag(space, 1, 1)
                return None
        self.add(tag.space, "consumers", Member(weight, 1, tag.block), f"{target!r}")
        if target not in self.module_space:
            self.module_space[target] = self.new_space(out[out_dim])
        space = self.add(self.module_space[target], "producers", Member(weight, 0), f"{target!r}")
        if bias is not None:
            space = self.add(space, "followers", Member(bias, 0), f"{target!r}")
        self.tags[node] = _Tag(space, out_dim, 1)
        return None


#: ``torch.fx.symbolic_trace`` patches module calls process-wide while it runs, so a trace on one
#: thread breaks a ``torch.export`` (or another trace) on another: both take this lock.
TRACE_LOCK = threading.RLock()


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, or a ValueError with the tracer's message."""
    try:
        with TRACE_LOCK:
            return fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracer failure becomes one clear error
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); channel "
            "pruning needs a traceable forward (no data-dependent control flow)"
        ) from exc


def channel_groups(
    model: nn.Module, example_inputs: torch.Tensor, weights: Sequence[str] | None = None,
) -> list[ChannelGroup]:
    """The channel groups of ``model``: channels that must be removed together (DepGraph idea).

    ``example_inputs`` (a batch; its first two samples are used) give the shapes; ``weights``
    restricts which Conv/Linear weights may be pruned: a group with a producer (rows) or a consumer
    (input columns) outside it is returned with ``prunable=False`` (followers are always sliced). Groups are in the order their first producer appears
    in the graph, ``index`` 0, 1, ... The model is not modified (shape propagation runs in eval
    mode without gradients).
    """
    params = {n for n, _ in model.named_parameters()}
    if weights is not None:
        unknown = sorted(set(weights) - params)
        if unknown:
            raise ValueError(f"unknown weight(s) {unknown}; known parameters: {', '.join(sorted(params))}")
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 1 or len(example_inputs) < 1:
        raise ValueError(f"example_inputs must be a batch tensor with at least one sample, got {example_inputs!r}")
    gm = trace(model)
    try:
        with eval_mode(model), eval_mode(gm), torch.no_grad():
            ShapeProp(gm).propagate(example_inputs[:2])
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot run {type(model).__name__} on example inputs of shape "
                         f"{tuple(example_inputs.shape)}: {type(exc).__name__}: {exc}") from exc
    analysis = _Analysis(gm, params)
    analysis.run(gm.graph)
    allowed = None if weights is None else set(weights)
    groups: list[ChannelGroup] = []
    roots = sorted({analysis.find(s) for s in range(len(analysis.spaces))}, key=lambda r: analysis.spaces[r].order)
    for root in roots:
        space = analysis.spaces[root]
        if not space.producers:
            continue
        reasons = list(space.reasons)
        if allowed is not None:
            reasons += [f"its producer {m.param} is not among the prunable weights"
                        for m in space.producers if m.param not in allowed]
            reasons += [f"its consumer {m.param} is not among the prunable weights (its input columns would go)"
                        for m in space.consumers if m.param not in allowed]
        groups.append(ChannelGroup(
            index=len(groups), channels=space.channels, producers=tuple(space.producers),
            consumers=tuple(space.consumers), followers=tuple(space.followers),
            prunable=not reasons, reason="; ".join(reasons),
        ))
    return groups
