"""Slow, obvious RoIAlign and RoIPool in plain Python, following torchvision's definitions
line by line. Built from differentiable torch indexing, so autograd through them gives the
reference gradients too."""

import math

import torch


def _bilinear(plane, y, x):
    """plane [C, H, W] sampled at (y, x) as torchvision does (zero outside [-1, size])."""
    C, H, W = plane.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return plane.new_zeros(C)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= H - 1:
        y_low = y_high = H - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= W - 1:
        x_low = x_high = W - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[:, y_low, x_low]
        + hy * lx * plane[:, y_low, x_high]
        + ly * hx * plane[:, y_high, x_low]
        + ly * lx * plane[:, y_high, x_high]
    )


def roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    ph_n, pw_n = output_size
    rows = []
    for roi in rois.tolist():
        plane = input[int(roi[0])]
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_n)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_n)
        count = max(grid_h * grid_w, 1)
        bins = []
        for ph in range(ph_n):
            for pw in range(pw_n):
                total = plane.new_zeros(plane.shape[0])
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total = total + _bilinear(plane, y, x)
                bins.append(total / count)
        rows.append(torch.stack(bins, 1).view(-1, ph_n, pw_n))
    if not rows:
        return input.new_zeros(0, input.shape[1], ph_n, pw_n)
    return torch.stack(rows)


def _c_round(v):
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def roi_pool(input, rois, output_size, spatial_scale):
    ph_n, pw_n = output_size
    H, W = input.shape[2:]
    rows = []
    for roi in rois.tolist():
        plane = input[int(roi[0])]
        x1, y1, x2, y2 = (_c_round(v * spatial_scale) for v in roi[1:])
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
        bins = []
        for ph in range(ph_n):
            h0 = min(max(math.floor(ph * bin_h) + y1, 0), H)
            h1 = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), H)
            for pw in range(pw_n):
                w0 = min(max(math.floor(pw * bin_w) + x1, 0), W)
                w1 = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), W)
                if h1 <= h0 or w1 <= w0:
                    bins.append(plane.new_zeros(plane.shape[0]))
                else:
                    bins.append(plane[:, h0:h1, w0:w1].flatten(1).max(1).values)
        rows.append(torch.stack(bins, 1).view(-1, ph_n, pw_n))
    if not rows:
        return input.new_zeros(0, input.shape[1], ph_n, pw_n)
    return torch.stack(rows)
