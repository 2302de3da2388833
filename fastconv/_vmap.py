"""Batching rules (torch.func.vmap) for every fastconv operator.

Each rule runs the operator once on the whole batch, never a loop over its entries. The
vmapped dimension B is folded into a dimension the operator already has, the way torch's own
convolution batching rule does:

- into the images N, where the filter is shared: an input [B, N, C, H, W] runs as [B*N, C, H, W];
- into the channels and the groups, where the filter is vmapped (model ensembles) or where a
  filter gradient is the result (per-sample gradients): B separate problems of g groups
  become one problem of B*g groups, or, where only one side of the filter is batched, of g
  groups each B times wider on that side, so that the unbatched operand is not copied B times;
- for the RoI operators, into the channels (features batched, boxes shared), the boxes
  (boxes batched, features shared), or the images (both: each entry's boxes re-indexed to
  its own images).

Naming follows DESIGN.md: activation x [N, C, H, W] (C = g*Cg), output y [N, K, P, Q]
(K = g*Kg), filter w [K, Cg, R, S]. A transposed convolution's input plays y, its output x,
and its weight [C_in, C_out/g, R, S] is exactly such a w. The backward operators compute
dgrad (y, w -> x) and wgrad (x, y -> w) for a convolution, and fprop (x, w -> y) and wgrad for
a transposed one; each gradient is run as its own call with an output mask, folded by what
its own operands are batched over. The third tensor of such a call is read for its shape
only (dgrad never reads x, wgrad never reads w), so the rules pass a zero-stride tensor of
the folded shape instead of copying it.
"""

import torch

from .errors import ArgumentError

ops = torch.ops.fastconv


def _first(t, dim):
    """t with its vmapped dimension first, or None when t is not vmapped."""
    return None if t is None or dim is None else t.movedim(dim, 0)


# ---------------------------------------------------------------- convolution
#
# A fold is one of "n" (B into the images), "c" (into the x side's channels: g groups of B*Cg),
# "k" (into the y side's channels: g groups of B*Kg) or "g" (into both: B*g groups).


def _fold_mode(batched, result):
    """The fold for one direction, from its operands' roles that are batched ({"x", "y", "w"})
    and its result's role; None when nothing is batched."""
    if not batched:
        return None
    if "w" not in batched and result != "w":
        return "n"
    x = "x" in batched or result == "x"
    y = "y" in batched or result == "y"
    return "g" if x and y else ("c" if x else "k")


def _fold(t, role, mode, b, groups):
    """A batched operand [B, ...] in its folded layout."""
    if role == "w":
        k, cg, r, s = t.shape[1:]
        if mode == "g":
            return t.reshape(b * k, cg, r, s)
        per_side = t.reshape(b, groups, k // groups, cg, r, s)
        if mode == "c":  # w'[(i, kg), (b, cg)] = w[b, (i, kg), cg]
            return per_side.permute(1, 2, 0, 3, 4, 5).reshape(k, b * cg, r, s)
        # "k": w'[(i, b, kg), cg] = w[b, (i, kg), cg]
        return per_side.permute(1, 0, 2, 3, 4, 5).reshape(groups * b * (k // groups), cg, r, s)
    n, channels, h, w = t.shape[1:]
    if mode == "n":
        return t.reshape(b * n, channels, h, w)
    if mode == "g":
        return t.transpose(0, 1).reshape(n, b * channels, h, w)
    # the side this fold widens: channels (i, b, c) of g groups, B times wider each
    per_group = channels // groups
    return (t.reshape(b, n, groups, per_group, h, w).permute(1, 2, 0, 3, 4, 5)
            .reshape(n, groups * b * per_group, h, w))


def _widens(role, mode):
    return mode == "g" or (mode == "c" and role == "x") or (mode == "k" and role == "y")


def _unfold(t, role, mode, b, groups):
    """A result in its folded layout back as [B, ...]."""
    if role == "w":
        if mode == "g":
            return t.reshape(b, t.shape[0] // b, *t.shape[1:])
        if mode == "c":
            k, bcg, r, s = t.shape
            return t.reshape(k, b, bcg // b, r, s).transpose(0, 1)
        gbkg, cg, r, s = t.shape
        kg = gbkg // (groups * b)
        return (t.reshape(groups, b, kg, cg, r, s).transpose(0, 1)
                .reshape(b, groups * kg, cg, r, s))
    if mode == "n":
        return t.reshape(b, t.shape[0] // b, *t.shape[1:])
    n, channels, h, w = t.shape
    if mode == "g":
        return t.reshape(n, b, channels // b, h, w).transpose(0, 1)
    per_group = channels // (groups * b)
    return (t.reshape(n, groups, b, per_group, h, w).permute(2, 0, 1, 3, 4, 5)
            .reshape(b, n, groups * per_group, h, w))


def _folded_shape(shape, role, mode, b, groups):
    """The folded shape of an unbatched tensor's shape, for a tensor read for its shape only."""
    if role == "w":
        k, cg, r, s = shape
        if mode == "c":
            return (k, b * cg, r, s)
        return (b * k, cg, r, s) if mode in ("k", "g") else tuple(shape)
    n, channels, h, w = shape
    if mode == "n":
        return (b * n, channels, h, w)
    return (n, b * channels, h, w) if _widens(role, mode) else tuple(shape)


def _shape_only(like, shape):
    return like.new_zeros(()).expand(shape)


def _folded_groups(mode, b, groups):
    return b * groups if mode == "g" else groups


def _run_direction(operands, result, b, groups, call, carrier=None):
    """One direction (fprop, dgrad or wgrad) on batched operands.

    operands: {role: (tensor with its batch dimension first, or unbatched; batched?)};
    result: the result's role; call(folded operands by role, carrier, groups) runs it;
    carrier: (role, per-entry shape, like) of the third tensor, read for its shape only.
    Returns (result, out_dim)."""
    batched = {role for role, (_, is_batched) in operands.items() if is_batched}
    mode = _fold_mode(batched, result)
    # Every operand a fold needs batched is batched: a filter gradient ("c", "k", "g") is
    # folded by its own operands, and fprop and dgrad fold "g" only when both are batched.
    folded = {role: _fold(t, role, mode, b, groups) if is_batched else t
              for role, (t, is_batched) in operands.items()}
    shape_only = None
    if carrier is not None:
        role, shape, like = carrier
        shape_only = _shape_only(like, _folded_shape(shape, role, mode, b, groups) if mode else shape)
    out = call(folded, shape_only, _folded_groups(mode, b, groups) if mode else groups)
    if mode is None:
        return out, None
    return _unfold(out, result, mode, b, groups), 0


def _bias_fold(bias, bias_batched, mode, b, groups):
    """The bias of a forward operator, folded as its result's channels (the side "c" and "k"
    widen is the result's); None where it has to be added after the call instead (a batched
    bias on an unfolded channel dimension)."""
    if bias is None:
        return None
    if mode is None or mode == "n":
        return None if bias_batched else bias
    channels = bias.shape[-1]
    full = bias if bias_batched else bias.expand(b, channels)
    if mode == "g":
        return full.reshape(b * channels)
    return full.reshape(b, groups, channels // groups).transpose(0, 1).reshape(b * channels)


def _add_batched_bias(out, out_dim, bias, b):
    """out (vmapped at out_dim, or not vmapped) plus a bias vmapped at 0, as [B, N, ch, h, w]."""
    out = out.unsqueeze(0).expand(b, *out.shape) if out_dim is None else out.movedim(out_dim, 0)
    return out + bias.reshape(b, 1, -1, 1, 1), 0


def _register_forward(name, input_role, result_role):
    op = getattr(ops, name)

    def rule(info, in_dims, input, weight, bias, *params):
        b = info.batch_size
        groups = params[-1]
        x, w, bias_b = _first(input, in_dims[0]), _first(weight, in_dims[1]), _first(bias, in_dims[2])
        operands = {input_role: (x if x is not None else input, x is not None),
                    "w": (w if w is not None else weight, w is not None)}
        batched = {role for role, (_, is_batched) in operands.items() if is_batched}
        mode = _fold_mode(batched, result_role)
        bias_batched = bias_b is not None
        folded_bias = _bias_fold(bias_b if bias_batched else bias, bias_batched, mode, b, groups)

        def call(f, _, folded_groups):
            return op(f[input_role], f["w"], folded_bias, *params[:-1], folded_groups)

        out, out_dim = _run_direction(operands, result_role, b, groups, call)
        if bias_batched and (mode is None or mode == "n"):
            return _add_batched_bias(out, out_dim, bias_b, b)
        return out, out_dim

    torch.library.register_vmap(f"fastconv::{name}", rule)


def _register_backward(name, grad_output_role, input_role):
    """conv2d_backward (grad_output plays y, input x) and conv_transpose2d_backward
    (grad_output plays x, input y): the input gradient has the input's role, computed from
    grad_output and w; the weight gradient from the input and grad_output."""
    op = getattr(ops, name)

    def rule(info, in_dims, grad_output, input, weight, *rest):
        *params, mask = rest
        b = info.batch_size
        groups = params[-1]
        other = params[:-1]
        go, x, w = (_first(grad_output, in_dims[0]), _first(input, in_dims[1]),
                    _first(weight, in_dims[2]))
        g_entry = (go if go is not None else grad_output, go is not None)
        x_entry = (x if x is not None else input, x is not None)
        w_entry = (w if w is not None else weight, w is not None)
        outs, dims = [None, None, None], [None, None, None]
        if mask[0]:
            def input_grad(f, shape_only, folded_groups):
                return op(f[grad_output_role], shape_only, f["w"], *other, folded_groups,
                          [True, False, False])[0]

            outs[0], dims[0] = _run_direction(
                {grad_output_role: g_entry, "w": w_entry}, input_role, b, groups, input_grad,
                carrier=(input_role, input.shape if x is None else x.shape[1:], grad_output))
        if mask[1]:
            def weight_grad(f, shape_only, folded_groups):
                return op(f[grad_output_role], f[input_role], shape_only, *other, folded_groups,
                          [False, True, False])[1]

            outs[1], dims[1] = _run_direction(
                {grad_output_role: g_entry, input_role: x_entry}, "w", b, groups, weight_grad,
                carrier=("w", weight.shape if w is None else w.shape[1:], grad_output))
        if mask[2]:
            if go is None:
                outs[2] = grad_output.sum((0, 2, 3))
            else:
                outs[2], dims[2] = go.sum((1, 3, 4)), 0
        return tuple(outs), tuple(dims)

    torch.library.register_vmap(f"fastconv::{name}", rule)


_register_forward("conv2d", "x", "y")
_register_forward("conv_transpose2d", "y", "x")
_register_backward("conv2d_backward", "y", "x")
_register_backward("conv_transpose2d_backward", "x", "y")


# ---------------------------------------------------------------- RoI operators


def _images_of_entries(rois, n, op):
    """Boxes [B, K, 5] of B entries, each on its own N images, as [B*K, 5] boxes on the B*N
    images of the folded batch: entry b's image i becomes image b*N + i. The indices are
    checked here, against each entry's own batch, before the folding could make a bad one
    look good. In float64, where the new indices are exact (the operator reads boxes in its
    accumulation type, from any floating type)."""
    index = rois[..., 0]
    valid = torch.isfinite(index) & (index > -1) & (index < n)
    if not bool(valid.all()):
        entry, k = (int(v) for v in torch.nonzero(~valid)[0])
        raise ArgumentError(
            f"fastconv::{op}: rois[{k}, 0] = {float(index[entry, k])} is not a batch index of the "
            f"input (batch size {n}), in entry {entry} of the vmapped dimension")
    rois = rois.to(torch.float64)
    b = rois.shape[0]
    offset = (torch.arange(b, device=rois.device, dtype=torch.float64) * n).unsqueeze(1)
    shifted = torch.cat([(rois[..., :1].trunc() + offset.unsqueeze(2)), rois[..., 1:]], dim=2)
    return shifted.reshape(-1, 5)


def _batched_or_expanded(t, dim, b):
    """t with its vmapped dimension first; a shared t expanded to [B, ...]."""
    return t.movedim(dim, 0) if dim is not None else t.expand(b, *t.shape)


def _side_by_side(t):
    """[B, M, C, ...] as [M, B*C, ...]: B problems side by side in the channels."""
    return t.transpose(0, 1).flatten(1, 2)


def _map_outputs(out, unfold):
    if isinstance(out, (tuple, list)):
        pairs = [unfold(t) for t in out]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    return unfold(out)


def _register_roi_forward(name):
    """roi_align and roi_pool: (input, rois, *args) -> outputs of [K, C, ph, pw]."""
    op = getattr(ops, name)

    def rule(info, in_dims, input, rois, *args):
        b = info.batch_size
        input_dim, rois_dim = in_dims[0], in_dims[1]
        if rois_dim is None:  # features vmapped, boxes shared: into the channels
            x = input.movedim(input_dim, 0)
            out = op(_side_by_side(x), rois, *args)
            return _map_outputs(out, lambda t: (t.unflatten(1, (b, x.shape[2])), 1))
        r = rois.movedim(rois_dim, 0)
        if input_dim is None:  # boxes vmapped, features shared: into the boxes
            out = op(input, r.flatten(0, 1), *args)
        else:  # both: into the images
            x = input.movedim(input_dim, 0)
            out = op(x.flatten(0, 1), _images_of_entries(r, x.shape[1], name), *args)
        return _map_outputs(out, lambda t: (t.unflatten(0, (b, r.shape[1])), 0))

    torch.library.register_vmap(f"fastconv::{name}", rule)


def _roi_align_backward_rule(info, in_dims, grad, rois, scale, ph, pw, n, c, h, w, sampling_ratio,
                             aligned):
    b = info.batch_size
    grad_dim, rois_dim = in_dims[0], in_dims[1]
    if rois_dim is None:
        out = ops.roi_align_backward(_side_by_side(grad.movedim(grad_dim, 0)), rois, scale, ph, pw,
                                     n, b * c, h, w, sampling_ratio, aligned)
        return out.unflatten(1, (b, c)), 1
    g = _batched_or_expanded(grad, grad_dim, b).flatten(0, 1)
    r = _images_of_entries(rois.movedim(rois_dim, 0), n, "roi_align_backward")
    out = ops.roi_align_backward(g, r, scale, ph, pw, b * n, c, h, w, sampling_ratio, aligned)
    return out.unflatten(0, (b, n)), 0


def _roi_pool_backward_rule(info, in_dims, grad, rois, argmax, scale, ph, pw, n, c, h, w):
    # argmax indexes each maximum within its own plane, so it folds as the gradient does.
    b = info.batch_size
    grad_dim, rois_dim, argmax_dim = in_dims[0], in_dims[1], in_dims[2]
    g = _batched_or_expanded(grad, grad_dim, b)
    a = _batched_or_expanded(argmax, argmax_dim, b)
    if rois_dim is None:
        out = ops.roi_pool_backward(_side_by_side(g), rois, _side_by_side(a), scale, ph, pw,
                                    n, b * c, h, w)
        return out.unflatten(1, (b, c)), 1
    r = _images_of_entries(rois.movedim(rois_dim, 0), n, "roi_pool_backward")
    out = ops.roi_pool_backward(g.flatten(0, 1), r, a.flatten(0, 1), scale, ph, pw, b * n, c, h, w)
    return out.unflatten(0, (b, n)), 0


def _roi_align_multilevel_rule(info, in_dims, features, rois, levels, *args):
    b = info.batch_size
    feature_dims, rois_dim, levels_dim = in_dims[0], in_dims[1], in_dims[2]
    feature_dims = list(feature_dims) if feature_dims is not None else [None] * len(features)
    per_entry = [f.shape if d is None else f.movedim(d, 0).shape[1:]
                 for f, d in zip(features, feature_dims)]
    n, c = per_entry[0][0], per_entry[0][1]
    if rois_dim is None and levels_dim is None:  # features vmapped: into the channels
        maps = [_side_by_side(_batched_or_expanded(f, d, b)) for f, d in zip(features, feature_dims)]
        out = ops.roi_align_multilevel(maps, rois, levels, *args)
        return out.unflatten(1, (b, c)), 1
    r = _batched_or_expanded(rois, rois_dim, b)
    level = _batched_or_expanded(levels, levels_dim, b).flatten(0, 1)
    if all(d is None for d in feature_dims):  # boxes or levels vmapped: into the boxes
        out = ops.roi_align_multilevel(list(features), r.flatten(0, 1), level, *args)
    else:  # both: into the images
        maps = [_batched_or_expanded(f, d, b).flatten(0, 1) for f, d in zip(features, feature_dims)]
        out = ops.roi_align_multilevel(maps, _images_of_entries(r, n, "roi_align_multilevel"), level,
                                       *args)
    return out.unflatten(0, (b, r.shape[1])), 0


_register_roi_forward("roi_align")
_register_roi_forward("roi_pool")
torch.library.register_vmap("fastconv::roi_align_backward", _roi_align_backward_rule)
torch.library.register_vmap("fastconv::roi_pool_backward", _roi_pool_backward_rule)
torch.library.register_vmap("fastconv::roi_align_multilevel", _roi_align_multilevel_rule)


# ---------------------------------------------------------------- torch's older vmap
#
# gradcheck(check_batched_grad=True) batches with torch's older vmap (torch._vmap_internals),
# whose BatchedTensors meet the "Batched" dispatch key rather than torch.func's. Its fallback
# runs an operator once per entry where every result is a Tensor, which the two backward
# operators' optional results are not. For those two, a kernel at that key computes each
# gradient from the forward operators, which the fallback can run:
#   dgrad (y, w -> x) is the transposed convolution of y, with as output_padding the rows and
#     columns the strided windows left over;
#   fprop (x, w -> y) is the convolution of x, cut to y's size (a transposed convolution's
#     output_padding may pass its stride, adding rows the convolution would compute);
#   wgrad (x, y -> w) is a convolution of x by y, their roles swapped: the images become the
#     channels it sums over, x's channels its batch, and stride and dilation trade places.


def _dgrad_by_transposed(dy, weight, x_shape, stride, padding, dilation, groups):
    n, c, h, w = x_shape
    if c == 0:  # no channels for the transposed convolution to produce
        return dy.new_zeros(x_shape)
    r, s = weight.shape[2:]
    leftover = [(h + padding[0] + padding[1] - dilation[0] * (r - 1) - 1) % stride[0],
                (w + padding[2] + padding[3] - dilation[1] * (s - 1) - 1) % stride[1]]
    return ops.conv_transpose2d(dy, weight, None, stride, padding, leftover, dilation, groups)


def _cut(t, rows, columns):
    # narrow only where there is something to cut: the older vmap has no rule for the alias a
    # full-size slice makes
    if t.shape[2] != rows:
        t = t.narrow(2, 0, rows)
    return t if t.shape[3] == columns else t.narrow(3, 0, columns)


def _fprop_cut(x, weight, y_shape, stride, padding, dilation, groups):
    y = ops.conv2d(x, weight, None, stride, padding, dilation, groups)
    return _cut(y, y_shape[2], y_shape[3])


def _wgrad_by_conv(x, dy, w_shape, stride, padding, dilation, groups):
    n, c, h, w = x.shape
    k, p, q = dy.shape[1:]
    cg, kg = c // groups, k // groups
    # x[n, (i, cg)] as [cg, (i, n)]: a batch of cg images of n channels in each group i.
    images = x.reshape(n, groups, cg, h, w).permute(2, 1, 0, 3, 4).reshape(cg, groups * n, h, w)
    # dy[n, (i, kg)] as [(i, kg), n]: k filters of n channels, of P x Q taps spaced by the stride.
    filters = dy.reshape(n, groups, kg, p, q).permute(1, 2, 0, 3, 4).reshape(k, n, p, q)
    out = ops.conv2d(images, filters, None, dilation, padding, stride, groups)  # [cg, k, >=R, >=S]
    return _cut(out, w_shape[2], w_shape[3]).transpose(0, 1)


def _older_vmap_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, mask):
    params = (stride, padding, dilation, groups)
    return (
        _dgrad_by_transposed(grad_output, weight, input.shape, *params) if mask[0] else None,
        _wgrad_by_conv(input, grad_output, weight.shape, *params) if mask[1] else None,
        grad_output.sum((0, 2, 3)) if mask[2] else None,
    )


def _older_vmap_conv_transpose2d_backward(grad_output, input, weight, stride, padding,
                                          output_padding, dilation, groups, mask):
    params = (stride, padding, dilation, groups)
    return (
        _fprop_cut(grad_output, weight, input.shape, *params) if mask[0] else None,
        _wgrad_by_conv(grad_output, input, weight.shape, *params) if mask[1] else None,
        grad_output.sum((0, 2, 3)) if mask[2] else None,
    )


_older_vmap_library = torch.library.Library("fastconv", "IMPL")
_older_vmap_library.impl("conv2d_backward", _older_vmap_conv2d_backward, "Batched")
_older_vmap_library.impl("conv_transpose2d_backward", _older_vmap_conv_transpose2d_backward, "Batched")
