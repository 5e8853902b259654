"""Channel groups applied: scores, masks for masked-dense evaluation, and the physically smaller model.

The groups come from :func:`prunescope.explorer.core.graph.channel_groups`. A keep vector per
group (bool, True = kept) is the whole decision; masks and the compacted model are two views of
it that compute the same logits.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunescope.explorer.core.forward import eval_mode
from prunescope.explorer.core.graph import ChannelGroup, Member


def group_scores(
    groups: Sequence[ChannelGroup], weights: dict[str, torch.Tensor], norm: str = "l1",
) -> dict[int, torch.Tensor]:
    """Importance of each channel of every prunable group, ``{group index: (channels,) float64}``.

    A channel's score is the norm of all its producers' output-channel weights taken together
    (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, extended to coupled layers as
    in DepGraph): 'l1' sums |w| over every producer's row; 'l2' is the square root of the sum of
    every producer row's squared L2 norm, i.e. the L2 norm of the concatenated rows. Followers
    (BatchNorm, depthwise convs) and consumers do not contribute.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"channel norm must be 'l1' or 'l2', got {norm!r}")
    scores: dict[int, torch.Tensor] = {}
    for group in groups:
        if not group.prunable:
            continue
        total = torch.zeros(group.channels, dtype=torch.float64)
        for member in group.producers:
            if member.param not in weights:
                raise ValueError(f"group {group.index} needs weight {member.param!r}, missing from the weights given")
            rows = weights[member.param].detach().double().reshape(group.channels, -1)
            total += rows.abs().sum(1) if norm == "l1" else rows.pow(2).sum(1)
        scores[group.index] = total if norm == "l1" else total.sqrt()
    return scores


def _checked_keep(groups: Sequence[ChannelGroup], keep: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """``keep`` validated: prunable group indices, bool vectors of the group's size, one channel kept."""
    by_index = {g.index: g for g in groups}
    out = {}
    for index, vector in keep.items():
        group = by_index.get(index)
        if group is None:
            raise ValueError(f"unknown channel group {index!r}; groups are 0..{len(groups) - 1}")
        if not group.prunable:
            raise ValueError(f"channel group {index} is not prunable: {group.reason}")
        vector = torch.as_tensor(vector)
        if vector.dtype != torch.bool or vector.shape != (group.channels,):
            raise ValueError(f"keep[{index}] must be a bool vector of shape ({group.channels},), "
                             f"got {vector.dtype} of shape {tuple(vector.shape)}")
        if not vector.any():
            raise ValueError(f"keep[{index}] removes all {group.channels} channels; keep at least one")
        out[index] = vector
    return out


def _along(member: Member, keep: torch.Tensor, rank: int) -> tuple:
    """Index selecting the kept entries of ``member``'s dimension in a tensor of ``rank`` dims."""
    index = [slice(None)] * rank
    index[member.dim] = keep.repeat_interleave(member.block)
    return tuple(index)


def group_masks(
    groups: Sequence[ChannelGroup], keep: dict[int, torch.Tensor], shapes: dict[str, tuple],
) -> dict[str, torch.Tensor]:
    """Weight masks (True = kept) equivalent to removing the channels ``keep`` drops.

    Every producer loses the rows, every consumer the input columns (``block`` features per
    channel) and every depthwise conv (a follower with a weight of 2+ dims) the rows of the
    removed channels. Because every consumer of a removed channel ignores it, masked-dense
    evaluation (weights * masks, biases and BatchNorm untouched) computes what the compacted
    network computes. ``shapes`` maps parameter names to shapes; only groups in ``keep`` get masks
    (the other groups stay dense), and a weight in several groups gets the AND of its masks.
    """
    keep = _checked_keep(groups, keep)
    masks: dict[str, torch.Tensor] = {}
    for group in groups:
        if group.index not in keep:
            continue
        members = [*group.producers, *group.consumers]
        members += [m for m in group.followers if m.param in shapes and len(shapes[m.param]) >= 2]
        for member in members:
            if member.param not in shapes:
                raise ValueError(f"group {group.index} needs the shape of {member.param!r}, missing from shapes")
            shape = tuple(shapes[member.param])
            mask = masks.setdefault(member.param, torch.ones(shape, dtype=torch.bool))
            mask[_along(member, ~keep[group.index], len(shape))] = False
    return masks


def _replace(model: nn.Module, name: str, value: torch.Tensor) -> None:
    path, _, attr = name.rpartition(".")
    module = model.get_submodule(path)
    if attr in module._parameters:
        old = module._parameters[attr]
        module._parameters[attr] = nn.Parameter(value.clone(), requires_grad=old.requires_grad)
    else:
        module._buffers[attr] = value.clone()


def compact_model(model: nn.Module, groups: Sequence[ChannelGroup], keep: dict[int, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` with the channels ``keep`` drops physically removed.

    Every group member (weights, biases, BatchNorm parameters and running statistics) is sliced
    along its dimension; Conv/Linear/BatchNorm attributes (``in_channels``, ``out_features``,
    ``num_features``, a depthwise conv's ``groups``...) follow the new shapes. ``model`` is not
    modified. In eval mode its logits equal masked-dense logits with :func:`group_masks`.
    """
    keep = _checked_keep(groups, keep)
    small = copy.deepcopy(model)
    tensors = {**dict(small.named_parameters()), **dict(small.named_buffers())}
    changed: set[str] = set()
    for group in groups:
        if group.index not in keep:
            continue
        for member in (*group.producers, *group.consumers, *group.followers):
            current = tensors[member.param]
            tensors[member.param] = current[_along(member, keep[group.index], current.dim())]
            changed.add(member.param)
    for name in changed:
        _replace(small, name, tensors[name])
    for path in {name.rpartition(".")[0] for name in changed}:
        module = small.get_submodule(path)
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.conv._ConvNd):
            module.out_channels = module.weight.shape[0]
            if module.groups > 1:  # only depthwise convs are ever sliced
                module.groups = module.in_channels = module.out_channels
            else:
                module.in_channels = module.weight.shape[1]
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            module.num_features = next(t.shape[0] for t in (module.weight, module.running_mean) if t is not None)
    return small


def count_flops(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """FLOPs per sample of ``model`` on ``example_inputs`` by ``FlopCounterMode`` (2 per multiply-add).

    Runs in eval mode without gradients (training flags restored after); only the ops
    FlopCounterMode knows (matmul, conv, attention...) count, elementwise ops do not.
    """
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 1 or len(example_inputs) < 1:
        raise ValueError(f"example_inputs must be a batch tensor with at least one sample, got {example_inputs!r}")
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(example_inputs)
    return counter.get_total_flops() // len(example_inputs)
