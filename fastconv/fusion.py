"""Inference-time fusion: fastconv.fuse(model) folds each BatchNorm into the convolution
before it, then fuses the residual addition and the activation that follow a 2-D convolution
into one fastconv::conv2d_fused call (fastconv.nn.FusedConv2d).

In eval mode a BatchNorm is a fixed per-channel affine map, y = (x - mean) / sqrt(var + eps)
* gamma + beta, and a convolution is linear in its filter, so BN(conv(x)) is one convolution
with each output channel's filter and bias rescaled. Which BNs may be folded is decided from
the model's torch.fx graph where the model traces (the BN's input must be a convolution whose
output nothing else reads), and from a few known module shapes where it does not. The
activation and the add are then found in the same graph (conv -> [add] -> [activation], each
the only reader of the one before), and in an untraced nn.Sequential as consecutive modules.

This module sits beside fastconv.nn: it must not import fastconv.models (the known blocks of
that package are matched by their class names instead)."""

from __future__ import annotations

import collections
import copy
import dataclasses
import operator
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from . import nn as fnn

__all__ = ["fuse", "FuseReport", "FoldedPair", "FusedOps", "freeze_filters", "thaw_filters",
           "frozen_filter_state"]

# Only these classes are folded: their forward is the plain convolution of their weight. A
# subclass (a weight-standardised conv, a "same"-padding one) may transform its weight or
# input first, and scaling the stored weight would then change its result.
_FOLDABLE_CONVS = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    fnn.Conv1d, fnn.Conv2d, fnn.ConvTranspose1d, fnn.ConvTranspose2d,
)
_FOLDABLE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# Blocks whose forward computes bn(conv(x)) with nothing else reading conv(x), by class (the
# module and qualified name, so that fastconv.models need not be imported), for models whose
# forward does not trace. Matched on the exact class: a subclass may override forward.
_KNOWN_BLOCKS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "fastconv.models.resnet.BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "fastconv.models.resnet.Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    "fastconv.models.googlenet.BasicConv2d": (("conv", "bn"),),
    "fastconv.models.autoencoder._UpStage": (("conv", "bn"),),
    "torchvision.models.resnet.BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "torchvision.models.resnet.Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    "torchvision.models.googlenet.BasicConv2d": (("conv", "bn"),),
}

SEPARATE_OPS_NOTE = (
    "activations and residual additions are fused into the 2-D convolution before them "
    "where each is the only reader of what precedes it (listed under 'fused'); the others "
    "stay separate ops"
)

# Exact classes: a subclass may change what forward computes.
_FUSABLE_CONVS = (nn.Conv2d, fnn.Conv2d)
_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish",
                       nn.LeakyReLU: "leaky_relu"}
_ACTIVATION_FUNCTIONS = {
    torch.relu: "relu", torch.relu_: "relu", torch.nn.functional.relu: "relu",
    torch.nn.functional.relu_: "relu", torch.nn.functional.relu6: "relu6",
    torch.nn.functional.silu: "silu", torch.nn.functional.hardswish: "hardswish",
    torch.nn.functional.leaky_relu: "leaky_relu",
}
_ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu"}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


@dataclasses.dataclass(frozen=True)
class FoldedPair:
    conv: str  # qualified names in the model
    bn: str
    how: str  # "fx graph" or the module-level rule that allowed it
    followed_by: Tuple[str, ...] = ()  # the ops that read the BN's output (fx only), still separate


@dataclasses.dataclass(frozen=True)
class FusedOps:
    conv: str  # the convolution's qualified name, now a fastconv.nn.FusedConv2d
    ops: Tuple[str, ...]  # what it absorbed, in order: "add" (the residual) and the activation
    how: str  # "fx graph" or "module rule: consecutive in an nn.Sequential"


@dataclasses.dataclass
class FuseReport:
    """What fastconv.fuse did: `folded`, the (conv, bn) pairs folded; `not_folded`, each
    BatchNorm left in the model with the reason; `untraced`, each module torch.fx could not
    trace (its children were analysed one by one, and its own direct children by module-level
    rules); `fused`, each convolution that absorbed the add and/or activation after it;
    `separate`, the rule for the rest."""

    folded: List[FoldedPair] = dataclasses.field(default_factory=list)
    fused: List[FusedOps] = dataclasses.field(default_factory=list)
    not_folded: Dict[str, str] = dataclasses.field(default_factory=dict)
    untraced: Dict[str, str] = dataclasses.field(default_factory=dict)
    separate: str = SEPARATE_OPS_NOTE
    frozen: List[str] = dataclasses.field(default_factory=list)  # convolutions whose filters froze
    not_frozen: Dict[str, str] = dataclasses.field(default_factory=dict)  # the others, with the reason

    def __str__(self) -> str:
        lines = [f"fastconv.fuse: folded {len(self.folded)} BatchNorm(s) into their convolutions"]
        for p in self.folded:
            after = f"; then, separate: {', '.join(p.followed_by)}" if p.followed_by else ""
            lines.append(f"  {p.conv} <- {p.bn} ({p.how}){after}")
        if self.fused:
            lines.append(f"fused {len(self.fused)} convolution(s) with the ops after them:")
            lines += [f"  {f.conv} + {' + '.join(f.ops)} ({f.how})" for f in self.fused]
        if self.not_folded:
            lines.append(f"not folded ({len(self.not_folded)}):")
            lines += [f"  {bn}: {why}" for bn, why in self.not_folded.items()]
        if self.untraced:
            lines.append("did not trace (analysed by module instead):")
            lines += [f"  {name}: {why}" for name, why in self.untraced.items()]
        lines.append(self.separate)
        if self.frozen:
            lines.append(f"froze the filters of {len(self.frozen)} convolution(s) (fastconv.freeze_filters)")
        if self.not_frozen:
            lines.append(f"filters not frozen ({len(self.not_frozen)}):")
            lines += [f"  {conv}: {why}" for conv, why in self.not_frozen.items()]
        return "\n".join(lines)


class _Tracer(torch.fx.Tracer):
    # Every convolution and BatchNorm one call_module node, whatever package defines it: the
    # analysis is about modules, and fastconv's layers would otherwise trace into F.conv2d.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (_ConvNd, _BatchNorm)) or super().is_leaf_module(m, qualname)


def _display(name: str) -> str:
    return name or "<the model itself>"


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _bn_refusal(bn: nn.Module) -> Optional[str]:
    if type(bn) not in _FOLDABLE_NORMS:
        return f"a {type(bn).__name__}, not a plain BatchNorm1d/2d/3d"
    if not bn.track_running_stats or bn.running_mean is None:
        return "track_running_stats=False: it normalises with the batch's statistics even in eval mode"
    if _has_hooks(bn):
        return "it has forward hooks, which folding would drop"
    return None


def _conv_refusal(conv: nn.Module, conv_name: str, bn: nn.Module) -> Optional[str]:
    if not isinstance(conv, _ConvNd):
        return f"no convolution before it ({_display(conv_name)} is a {type(conv).__name__})"
    if type(conv) not in _FOLDABLE_CONVS:
        return (f"{conv_name} is a {type(conv).__module__}.{type(conv).__qualname__}: only the plain "
                "torch.nn / fastconv.nn convolution classes are folded (a subclass may transform "
                "its weight or input in forward)")
    if _has_hooks(conv):
        return f"{conv_name} has forward hooks, which would see the folded output"
    if conv.out_channels != bn.num_features:
        return f"{conv_name} has {conv.out_channels} output channels, the BatchNorm {bn.num_features}"
    if not conv.weight.is_floating_point():
        return f"{conv_name}'s weight is {conv.weight.dtype}"
    return None


def _describe(node, root: nn.Module, prefix: str) -> str:
    if not isinstance(node, torch.fx.Node):
        return repr(node)
    if node.op == "call_module":
        return f"{prefix}{node.target} ({type(root.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "placeholder":
        return f"the input '{node.target}'"
    return f"{node.op} {node.target}"


class _Analysis:
    def __init__(self):
        self.pairs: List[FoldedPair] = []
        self.report = FuseReport()
        # What the second pass (activations and additions) works on: each traced graph with
        # its module and qualified prefix, and each untraced nn.Sequential.
        self.graphs: List[Tuple[torch.fx.Graph, nn.Module, str]] = []
        self.sequentials: List[Tuple[nn.Sequential, str]] = []

    def refuse(self, bn_name: str, reason: str):
        self.report.not_folded.setdefault(bn_name, reason)

    def graph(self, graph: torch.fx.Graph, root: nn.Module, prefix: str):
        self.graphs.append((graph, root, prefix))
        calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
        seen = set()
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            bn = root.get_submodule(node.target)
            if not isinstance(bn, _BatchNorm) or node.target in seen:
                continue
            seen.add(node.target)
            bn_name = prefix + node.target
            reason = _bn_refusal(bn)
            if reason is None and calls[node.target] > 1:
                reason = f"it is called {calls[node.target]} times in forward"
            src = node.args[0] if node.args else None
            if reason is None and (len(node.args) != 1 or node.kwargs):
                reason = "it is called with more than its input"
            if reason is None and not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                                       and isinstance(root.get_submodule(src.target), _ConvNd)):
                reason = f"no convolution module before it: its input is {_describe(src, root, prefix)}"
            if reason is None:
                conv_name = prefix + src.target
                reason = _conv_refusal(root.get_submodule(src.target), conv_name, bn)
                if reason is None and calls[src.target] > 1:
                    reason = f"{conv_name} is called {calls[src.target]} times in forward"
                if reason is None and len(src.users) > 1:
                    others = [_describe(u, root, prefix) for u in src.users if u is not node]
                    reason = f"the output of {conv_name} is also used by {', '.join(others)}"
            if reason is not None:
                self.refuse(bn_name, reason)
                continue
            followers = tuple(_describe(u, root, prefix) for u in node.users)
            self.pairs.append(FoldedPair(prefix + src.target, bn_name, "fx graph", followers))
        for name, m in root.named_modules():
            if isinstance(m, _BatchNorm) and name not in seen:
                self.refuse(prefix + name, "not called as a module by the traced forward (for example a "
                                           "branch that runs only in training, such as an auxiliary head)")

    def by_module(self, module: nn.Module, prefix: str):
        """Rules for the direct children of a module whose forward does not trace."""
        children = dict(module.named_children())
        rules: List[Tuple[str, str, str]] = []
        key = f"{type(module).__module__}.{type(module).__qualname__}"
        if key in _KNOWN_BLOCKS:
            rules = [(c, b, f"module rule: {type(module).__name__}.{b}({c}(x))") for c, b in _KNOWN_BLOCKS[key]]
        elif isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            self.sequentials.append((module, prefix))
            names = list(children)
            rules = [(a, b, "module rule: consecutive in an nn.Sequential")
                     for a, b in zip(names, names[1:]) if isinstance(children[b], _BatchNorm)]
        claimed = set()
        for c, b, how in rules:
            bn, conv = children.get(b), children.get(c)
            if not isinstance(bn, _BatchNorm):
                continue
            claimed.add(b)
            reason = _bn_refusal(bn) or _conv_refusal(conv, prefix + c, bn)
            if reason is None:
                self.pairs.append(FoldedPair(prefix + c, prefix + b, how))
            else:
                self.refuse(prefix + b, reason)
        for name, child in children.items():
            if isinstance(child, _BatchNorm) and name not in claimed:
                self.refuse(prefix + name, f"{_display(prefix[:-1])} ({type(module).__name__}) does not "
                                           "trace, and no module-level rule pairs this BatchNorm with a "
                                           "convolution")

    def walk(self, module: nn.Module, prefix: str = ""):
        if isinstance(module, _BatchNorm):  # reached through a container of a module that did not trace
            self.refuse(prefix[:-1], "the module that calls it does not trace, and no module-level rule "
                                     "pairs this BatchNorm with a convolution")
            return
        if isinstance(module, _ConvNd):
            return
        if type(module).forward is nn.Module.forward:  # a container (ModuleList, ModuleDict): nothing to trace
            for name, child in module.named_children():
                self.walk(child, f"{prefix}{name}.")
            return
        try:
            graph = _Tracer().trace(module)
        except Exception as e:  # whatever the model's own Python raises on a Proxy
            why = str(e).strip().splitlines()
            self.report.untraced[_display(prefix[:-1])] = f"{type(e).__name__}: {why[0] if why else ''}"
            self.by_module(module, prefix)
            for name, child in module.named_children():
                if not isinstance(child, (_ConvNd, _BatchNorm)):  # by_module has judged those
                    self.walk(child, f"{prefix}{name}.")
            return
        self.graph(graph, module, prefix)


def _fold(conv: _ConvNd, bn: _BatchNorm):
    """conv's weight and bias become those of bn(conv(.)); computed in float64, then rounded
    once to the weight's dtype."""
    with torch.no_grad():
        w = conv.weight
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        bias = shift if conv.bias is None else conv.bias.double() * scale + shift
        spatial = (1,) * (w.dim() - 2)
        if conv.transposed:
            # weight [in, out / groups, *k]: output channel g * (out / groups) + j is column j
            # of group g's rows.
            g = conv.groups
            wg = w.double().reshape(g, w.shape[0] // g, *w.shape[1:])
            new_w = (wg * scale.reshape(g, 1, w.shape[1], *spatial)).reshape(w.shape)
        else:
            new_w = w.double() * scale.reshape(-1, 1, *spatial)
        conv.weight = nn.Parameter(new_w.to(w.dtype), requires_grad=w.requires_grad)
        conv.bias = nn.Parameter(bias.to(device=w.device, dtype=w.dtype), requires_grad=w.requires_grad)


def _activation(node, root: nn.Module, src) -> Optional[Tuple[str, float]]:
    """(activation, negative_slope) when `node` applies one of conv2d_fused's activations to
    `src` and nothing else, else None."""
    slope = 0.01
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        name = _ACTIVATION_MODULES.get(type(m))
        if name is None and type(m) is nn.Hardtanh and (m.min_val, m.max_val) == (0.0, 6.0):
            name = "relu6"
        if name is None or _has_hooks(m) or node.args != (src,) or node.kwargs:
            return None
        return name, float(getattr(m, "negative_slope", slope))
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS:
        name = _ACTIVATION_FUNCTIONS[node.target]
        if not node.args or node.args[0] is not src:
            return None
        extra = dict(zip(("negative_slope",) if name == "leaky_relu" else (), node.args[1:2]))
        if len(node.args) > (2 if name == "leaky_relu" else 1):
            extra["inplace"] = node.args[-1]
        extra.update(node.kwargs)
        if set(extra) - {"negative_slope", "inplace"} or any(isinstance(v, torch.fx.Node) for v in extra.values()):
            return None
        return name, float(extra.get("negative_slope", slope))
    if node.op == "call_method" and node.target in _ACTIVATION_METHODS:
        if node.args != (src,) or node.kwargs:
            return None
        return _ACTIVATION_METHODS[node.target], slope
    return None


def _residual(node, src) -> Optional[torch.fx.Node]:
    """The other operand when `node` is src + other (other a graph value, not src itself)."""
    is_add = ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
              or (node.op == "call_method" and node.target in ("add", "add_")))
    if not is_add or node.kwargs or len(node.args) != 2:
        return None
    a, b = node.args
    other = b if a is src else a if b is src else None
    if not isinstance(other, torch.fx.Node) or other is src:
        return None
    return other


def _only_user(node) -> Optional[torch.fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _fuse_graph(graph: torch.fx.Graph, root: nn.Module, prefix: str, report: "FuseReport") -> bool:
    """Rewrites conv -> [identity...] -> [add] -> [activation] chains of `graph` (over `root`,
    its BatchNorms already folded into identities) into one FusedConv2d call. Whether any was."""
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_module" or node.graph is not graph:
            continue
        conv = root.get_submodule(node.target)
        if (type(conv) not in _FUSABLE_CONVS or calls[node.target] > 1 or _has_hooks(conv)
                or len(node.args) != 1 or node.kwargs or not conv.weight.is_floating_point()):
            continue
        chain, tail = [], node
        while (u := _only_user(tail)) is not None and u.op == "call_module" and \
                type(root.get_submodule(u.target)) is nn.Identity and u.args == (tail,):
            chain.append(u)
            tail = u
        ops, residual, act = [], None, None
        u = _only_user(tail)
        if u is not None and (residual := _residual(u, tail)) is not None:
            chain.append(u)
            ops.append("add")
            tail = u
            u = _only_user(tail)
        if u is not None and (act := _activation(u, root, tail)) is not None:
            chain.append(u)
            ops.append(act[0])
        if not ops:
            continue
        name, slope = act if act is not None else ("none", 0.01)
        _replace(root, node.target, fnn.FusedConv2d.from_conv(conv, name, slope))
        last = chain[-1]
        # At the last op's place: the residual may be computed after the convolution.
        with graph.inserting_before(last):
            fused = graph.call_module(node.target, (node.args[0],) + ((residual,) if residual is not None else ()))
        last.replace_all_uses_with(fused)
        for n in reversed(chain):
            graph.erase_node(n)
        graph.erase_node(node)
        report.fused.append(FusedOps(prefix + node.target, tuple(ops), "fx graph"))
        changed = True
    return changed


def _fuse_sequential(seq: nn.Sequential, prefix: str, report: "FuseReport"):
    """conv, identities (folded BatchNorms), activation, consecutive in an untraced
    nn.Sequential: the activation moves into the convolution and becomes an identity."""
    names = list(seq._modules)
    for i, name in enumerate(names):
        conv = seq._modules[name]
        if type(conv) not in _FUSABLE_CONVS or _has_hooks(conv) or not conv.weight.is_floating_point():
            continue
        j = i + 1
        while j < len(names) and type(seq._modules[names[j]]) is nn.Identity:
            j += 1
        if j == len(names):
            continue
        act_module = seq._modules[names[j]]
        act = _ACTIVATION_MODULES.get(type(act_module))
        if act is None or _has_hooks(act_module):
            continue
        slope = float(getattr(act_module, "negative_slope", 0.01))
        seq._modules[name] = fnn.FusedConv2d.from_conv(conv, act, slope)
        seq._modules[names[j]] = nn.Identity()
        report.fused.append(FusedOps(prefix + name, (act,), "module rule: consecutive in an nn.Sequential"))


def _replace(root: nn.Module, name: str, new: nn.Module):
    parent_name, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, leaf, new)


def _filters(target) -> List[Tuple[str, torch.Tensor]]:
    if isinstance(target, torch.Tensor):
        return [("", target)]
    if isinstance(target, nn.Module):
        return [(name, m.weight) for name, m in target.named_modules()
                if isinstance(m, _ConvNd) and isinstance(m.weight, torch.Tensor)]
    raise TypeError(f"fastconv.freeze_filters: target must be a torch.nn.Module or a Tensor, "
                    f"got {type(target).__name__}")


def freeze_filters(target) -> List[str]:
    """Marks filters as frozen: what fastconv's kernels derive from a filter on every call
    (Winograd's transformed filters, a channels-last GEMM's transposed filter matrix, whether
    it is finite) is kept between calls instead, as oneDNN's prepacked weights are under
    torch.compile(freezing=True). `target` is a tensor, or a module whose convolutions'
    (torch.nn or fastconv.nn, any subclass) weights are frozen. Returns the qualified names of
    those convolutions ("" for a tensor). fastconv.fuse freezes its copy's filters.

    Kept tensors cost memory: up to 4x a 3x3 filter's size for Winograd F(4x4), 16/9x for
    F(2x2), 1x for a transposed matrix; fastconv.frozen_filter_state() reports the total. They
    are freed with the filter or by thaw_filters.

    A kept tensor is used only while the filter's version counter, data pointer, sizes and
    strides are unchanged, so in-place writes autograd sees (weight.copy_, an optimiser's
    step, load_state_dict) are picked up on the next call. A write through weight.data is
    not seen (it has a version counter of its own): thaw first. A filter made under
    torch.inference_mode has no version counter and is refused (ValueError)."""
    found = _filters(target)
    for _, w in found:
        torch.ops.fastconv._freeze_filter(w)
    return [name for name, _ in found]


def thaw_filters(target=None) -> None:
    """Undoes freeze_filters for a tensor or a module's convolutions, or for every filter
    (target=None), and frees what was kept for them."""
    if target is None:
        torch.ops.fastconv._thaw_all_filters()
        return
    for _, w in _filters(target):
        torch.ops.fastconv._thaw_filter(w)


def frozen_filter_state() -> Dict[str, int]:
    """The frozen filters still alive, the tensors kept for them and their bytes, and how
    often a kernel found (hits) or had to make (misses) one, since the process started."""
    filters, derived, nbytes, hits, misses = torch.ops.fastconv._filter_cache_state()
    return {"filters": filters, "kept": derived, "bytes": nbytes, "hits": hits, "misses": misses}


def fuse(model: nn.Module, report: bool = False, activations: bool = True, freeze: bool = True):
    """An inference copy of `model` with every BatchNorm that directly follows a convolution
    folded into that convolution's weight and bias (a bias is added where it had none) and
    replaced by nn.Identity. The input model is not changed (the copy is a deepcopy).

    Both must be in eval mode: the folded BatchNorm's running statistics are frozen into the
    weights, so the copy is for inference only (ValueError, naming the module, otherwise).

    Folded: torch.nn Conv1d/2d/3d, ConvTranspose1d/2d/3d and fastconv.nn's convolutions (exact
    classes; groups, any padding mode), followed by BatchNorm1d/2d/3d with running statistics.
    Where the model traces with torch.fx, a pair is folded when the BN's only input is the
    convolution's output and nothing else reads that output; where it does not, its children
    are traced one by one, and its own direct children folded by rules: consecutive conv, BN
    in an nn.Sequential, and the conv/bn attributes of known blocks (ResNet's BasicBlock and
    Bottleneck, GoogLeNet's BasicConv2d, the autoencoder's up-stage).

    Then, with activations=True, each 2-D convolution (torch.nn / fastconv.nn Conv2d, exact
    class) followed by a residual addition and/or an activation (ReLU, ReLU6, SiLU,
    Hardswish, LeakyReLU, as modules or functions), each the only reader of what comes
    before it, becomes a fastconv.nn.FusedConv2d that computes them in one conv2d_fused
    call. In a module that traces, the module is replaced by its rewritten torch.fx
    GraphModule (its submodules and parameters are kept; methods of its own class are not);
    in an untraced nn.Sequential, conv (BN) activation in a row fuse in place.

    With freeze=True, the copy's convolution filters are frozen (freeze_filters): the
    kernels keep what they derive from them between calls, at a memory cost that
    fastconv.frozen_filter_state() reports.

    report=True returns (fused model, FuseReport): the folded pairs by qualified name, each
    BatchNorm left with the reason, the convolutions that absorbed their add and activation,
    the modules that did not trace, the convolutions whose filters froze; str() of it is
    readable."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastconv.fuse: model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError(f"fastconv.fuse: the model ({type(model).__name__}) is in training mode; "
                         "folding freezes BatchNorm's running statistics, so call model.eval() first")
    fused = copy.deepcopy(model)
    analysis = _Analysis()
    analysis.walk(fused)
    training = [p.bn for p in analysis.pairs if fused.get_submodule(p.bn).training]
    if training:
        raise ValueError(f"fastconv.fuse: BatchNorm {', '.join(training)} is in training mode (the model "
                         "is in eval mode, that module is not); call model.eval() first")
    for p in analysis.pairs:
        _fold(fused.get_submodule(p.conv), fused.get_submodule(p.bn))
    for p in analysis.pairs:
        _replace(fused, p.bn, nn.Identity())
    analysis.report.folded = analysis.pairs
    if activations:
        for seq, prefix in analysis.sequentials:
            _fuse_sequential(seq, prefix, analysis.report)
        # Deepest first: a rewritten module replaces itself in its parent, which a graph of
        # the parent's does not reference (the parent's graph inlines it or calls it by name).
        for graph, root, prefix in sorted(analysis.graphs, key=lambda g: -g[2].count(".")):
            if _fuse_graph(graph, root, prefix, analysis.report):
                graph.lint()
                module = torch.fx.GraphModule(root, graph, class_name=type(root).__name__)
                # The module's own children, not fx's copies of what the graph calls: the
                # containers stay what they were (an nn.Sequential still indexes), and parts
                # the traced forward does not call (a training-only auxiliary head) stay too.
                for name, child in root.named_children():
                    module.add_module(name, child)
                module.train(root.training)
                if prefix:
                    _replace(fused, prefix[:-1], module)
                else:
                    fused = module
    if freeze:
        for name, w in _filters(fused):
            if w.is_inference():
                analysis.report.not_frozen[name] = ("an inference tensor (made under torch.inference_mode) "
                                                    "keeps no version counter")
            else:
                freeze_filters(w)
                analysis.report.frozen.append(name)
    return (fused, analysis.report) if report else fused
