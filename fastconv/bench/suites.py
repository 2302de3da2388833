"""What the benchmark measures: the seed suite (DESIGN.md's table of the lecture's layers), a
one-off layer from --layer, or the convolutions of a whole network traced from its model.

A case knows its shapes, how to build inputs, how to run fastconv and the baseline in each
direction, and the work it does (FLOPs and minimum bytes) for the roofline."""

import contextlib
import dataclasses
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as TF

import fastconv.functional as F
from fastconv._conv_formulas import (
    conv_flops,
    conv_min_bytes,
    conv_output_size,
    transposed_as_conv,
    transposed_output_size,
)

ops = torch.ops.fastconv

DIRECTIONS = ("fprop", "dgrad", "wgrad", "all")
# The batch a suite runs with unless --batch says otherwise: small on a 2-core CPU, so the
# default run fits in minutes; large enough to fill a GPU.
DEFAULT_BATCH = {"cpu": 2, "cuda": 32}


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@dataclasses.dataclass
class ConvCase:
    """A 2-D convolution, a transposed one, or a 1-D one (H == 1), in torch's terms: C input
    channels, K output channels, weight [K, C/groups, R, S] (transposed: [C, K/groups, R, S])."""

    group: str
    name: str
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    output_padding: Tuple[int, int] = (0, 0)
    transposed: bool = False
    one_d: bool = False
    N: Optional[int] = None  # fixed batch (e.g. 100 RoIs); None: the run's batch
    count: int = 1  # how often the layer occurs in its network

    @property
    def op(self):
        if self.one_d:
            return "conv_transpose1d" if self.transposed else "conv1d"
        return "conv_transpose2d" if self.transposed else "conv2d"

    def batch(self, default):
        return self.N if self.N is not None else default

    def output_size(self):
        sh, sw = self.stride
        ph, pw = self.padding
        dh, dw = self.dilation
        if self.transposed:
            oph, opw = self.output_padding
            return (transposed_output_size(self.H, self.R, ph, ph, sh, dh, oph),
                    transposed_output_size(self.W, self.S, pw, pw, sw, dw, opw))
        return (conv_output_size(self.H, self.R, ph, ph, sh, dh),
                conv_output_size(self.W, self.S, pw, pw, sw, dw))

    def shape_text(self, n):
        p, q = self.output_size()
        extra = []
        if self.stride != (1, 1):
            extra.append(f"s{self.stride[0]}" if self.stride[0] == self.stride[1] else f"s{self.stride}")
        if self.padding != (0, 0):
            extra.append(f"p{self.padding[0]}" if self.padding[0] == self.padding[1] else f"p{self.padding}")
        if self.dilation != (1, 1):
            extra.append(f"d{self.dilation[0]}")
        if self.groups != 1:
            extra.append("dw" if self.groups == self.C and (self.transposed or self.K % self.C == 0) else f"g{self.groups}")
        kernel = f"{self.S}" if self.one_d else f"{self.R}x{self.S}"
        spatial = f"{self.W}" if self.one_d else f"{self.H}x{self.W}"
        return f"N{n} {self.C}->{self.K} {kernel} {' '.join(extra)} @{spatial}".replace("  ", " ")

    # The convolution whose dgrad a transposed convolution is has its x and y swapped.
    def _conv_sizes(self, n):
        p, q = self.output_size()
        if self.transposed:  # conv activation is the transposed output
            return transposed_as_conv(N=n, C=self.C, H=self.H, W=self.W, K=self.K, P=p, Q=q)
        return dict(N=n, C=self.C, H=self.H, W=self.W, K=self.K, P=p, Q=q)

    def flops(self, n, direction):
        s = self._conv_sizes(n)
        one = float(conv_flops(s["N"], s["C"], s["K"], s["P"], s["Q"], self.R, self.S, self.groups))
        return one * (3 if direction == "all" else 1)

    def min_bytes(self, n, direction, element_size):
        s = self._conv_sizes(n)
        # fprop reads x and w and writes y; dgrad and wgrad likewise touch three tensors of
        # these sizes; "all" does the three passes.
        one = conv_min_bytes(s["N"], s["C"], s["H"], s["W"], s["K"], s["P"], s["Q"], self.R, self.S,
                             self.groups, element_size)
        return one * (3 if direction == "all" else 1)

    def make(self, n, device, dtype, layout, generator):
        def rand(*shape):
            return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)

        if self.transposed:
            w = rand(self.C, self.K // self.groups, self.R, self.S)
        else:
            w = rand(self.K, self.C // self.groups, self.R, self.S)
        x = rand(n, self.C, self.H, self.W)
        b = rand(self.K)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)
        if self.one_d:
            x, w = x[:, :, 0, :].contiguous(), w[:, :, 0, :].contiguous()
        return x, w, b

    def _kwargs(self):
        if self.one_d:
            kw = dict(stride=self.stride[1], padding=self.padding[1], dilation=self.dilation[1], groups=self.groups)
            if self.transposed:
                kw["output_padding"] = self.output_padding[1]
            return kw
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if self.transposed:
            kw["output_padding"] = self.output_padding
        return kw

    def runners(self, n, device, dtype, layout, direction, generator):
        """(fastconv, baseline): zero-argument callables returning the tensors they computed."""
        x, w, b = self.make(n, device, dtype, layout, generator)
        kw = self._kwargs()
        ours = getattr(F, self.op)
        theirs = getattr(TF, self.op)
        y = theirs(x, w, b, **kw)
        dy = torch.randn(y.shape, generator=generator, dtype=torch.float32).to(device, dtype)
        if layout == "nhwc" and dy.dim() == 4:
            dy = dy.contiguous(memory_format=torch.channels_last)
        if direction == "fprop":
            return (lambda: [ours(x, w, b, **kw)]), (lambda: [theirs(x, w, b, **kw)])
        if direction == "all":
            def step(fn):
                def run():
                    xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
                    out = fn(xg, wg, bg, **kw)
                    return [out, *torch.autograd.grad(out, (xg, wg, bg), dy)]
                return run
            return step(ours), step(theirs)
        # dgrad / wgrad alone: each library's own backward operator with one output.
        mask = [direction == "dgrad", direction == "wgrad", False]
        pick = 0 if direction == "dgrad" else 1
        x4, w4, dy4 = (x, w, dy) if not self.one_d else (x.unsqueeze(2), w.unsqueeze(2), dy.unsqueeze(2))
        stride = (1, self.stride[1]) if self.one_d else self.stride
        dilation = (1, self.dilation[1]) if self.one_d else self.dilation
        pad4 = (0, 0, self.padding[1], self.padding[1]) if self.one_d else (
            self.padding[0], self.padding[0], self.padding[1], self.padding[1])
        pad2 = (0, self.padding[1]) if self.one_d else self.padding
        opad = (0, self.output_padding[1]) if self.one_d else self.output_padding
        if self.transposed:
            def fast():
                return [ops.conv_transpose2d_backward(dy4, x4, w4, stride, pad4, opad, dilation, self.groups, mask)[pick]]
        else:
            def fast():
                return [ops.conv2d_backward(dy4, x4, w4, stride, pad4, dilation, self.groups, mask)[pick]]

        def base():
            return [torch.ops.aten.convolution_backward(
                dy4, x4, w4, None, stride, pad2, dilation, self.transposed, opad, self.groups, mask)[pick]]
        return fast, base


@dataclasses.dataclass
class RoiCase:
    """RoIAlign or RoIPool over `boxes` random boxes on features [N, C, H, W]."""

    group: str
    name: str
    op: str  # roi_align | roi_pool
    N: int
    C: int
    H: int
    W: int
    boxes: int
    output: int
    spatial_scale: float
    sampling_ratio: int = 2
    aligned: bool = True
    count: int = 1
    # Both sides under torch.use_deterministic_algorithms(True): fastconv's gather backward
    # against torchvision's deterministic path (pure Python on CUDA).
    deterministic: bool = False

    def batch(self, default):
        return self.N

    def shape_text(self, n):
        extra = f" sr{self.sampling_ratio}{' aligned' if self.aligned else ''}" if self.op == "roi_align" else ""
        extra += " deterministic" if self.deterministic else ""
        return f"{self.boxes} boxes {self.output}x{self.output} on {self.N}x{self.C}x{self.H}x{self.W}{extra}"

    def flops(self, n, direction):
        return 0.0  # memory-bound: rated in GB/s

    def min_bytes(self, n, direction, element_size):
        out = self.boxes * self.C * self.output * self.output
        # Each output element reads at least one input element; backward writes them back.
        touched = min(self.N * self.C * self.H * self.W, out * 4)
        return element_size * (out + touched + 5 * self.boxes) * (2 if direction == "all" else 1)

    def make_rois(self, device, dtype, generator):
        image_h, image_w = self.H / self.spatial_scale, self.W / self.spatial_scale
        xy = torch.rand(self.boxes, 2, generator=generator) * torch.tensor([image_w, image_h]) * 0.8
        wh = torch.rand(self.boxes, 2, generator=generator) * torch.tensor([image_w, image_h]) * 0.4 + 8
        idx = torch.randint(0, self.N, (self.boxes, 1), generator=generator).float()
        return torch.cat([idx, xy, xy + wh], 1).to(device, dtype)

    def runners(self, n, device, dtype, layout, direction, generator):
        import torchvision.ops  # the baseline; only needed when RoI rows run

        x = torch.randn(self.N, self.C, self.H, self.W, generator=generator).to(device, dtype)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        rois = self.make_rois(device, dtype, generator)
        if self.op == "roi_align":
            args = (self.output, self.spatial_scale, self.sampling_ratio, self.aligned)
            ours, theirs = F.roi_align, torchvision.ops.roi_align
        else:
            args = (self.output, self.spatial_scale)
            ours, theirs = F.roi_pool, torchvision.ops.roi_pool
        mode = _deterministic if self.deterministic else contextlib.nullcontext
        if direction == "fprop":
            return (_under(mode, lambda: [ours(x, rois, *args)]),
                    _under(mode, lambda: [theirs(x, rois, *args)]))
        grad = torch.randn(self.boxes, self.C, self.output, self.output, generator=generator).to(device, dtype)

        def step(fn, forward):
            def run():
                xg = x.detach().requires_grad_()
                out = fn(xg, rois, *args)
                (g,) = torch.autograd.grad(out, xg, grad)
                return [out, g] if forward else [g]
            return _under(mode, run)
        # "dgrad" is the input gradient alone (it includes the forward both sides need).
        return step(ours, direction == "all"), step(theirs, direction == "all")

    def directions(self):
        return ("fprop", "dgrad", "all")


@contextlib.contextmanager
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _under(mode, fn):
    def run():
        with mode():
            return fn()
    return run


@dataclasses.dataclass
class FpnCase:
    """The FPN multi-level RoIAlign of Mask R-CNN's heads: `boxes` boxes over images of
    H x W pixels, each pooled from the level its size picks (P2-P5, scales 1/4 to 1/32),
    fastconv's RoIPooler against torchvision's MultiScaleRoIAlign."""

    group: str
    name: str
    N: int
    C: int
    H: int
    W: int
    boxes: int
    output: int
    sampling_ratio: int = 2
    levels: int = 4
    count: int = 1
    op: str = "fpn_roi_align"

    def batch(self, default):
        return self.N

    def level_shapes(self):
        return [(self.H // 2 ** (2 + i), self.W // 2 ** (2 + i)) for i in range(self.levels)]

    def shape_text(self, n):
        return (f"{self.boxes} boxes {self.output}x{self.output} on {self.levels} levels of "
                f"{self.N}x{self.C}x{self.H // 4}x{self.W // 4}.. sr{self.sampling_ratio}")

    def flops(self, n, direction):
        return 0.0

    def min_bytes(self, n, direction, element_size):
        out = self.boxes * self.C * self.output * self.output
        features = sum(self.N * self.C * h * w for h, w in self.level_shapes())
        touched = min(features, out * 4)
        return element_size * (out + touched + 4 * self.boxes) * (2 if direction == "all" else 1)

    def runners(self, n, device, dtype, layout, direction, generator):
        import torchvision.ops  # the baseline

        from fastconv.models.detection import RoIPooler

        names = [str(i) for i in range(self.levels)]
        features = [torch.randn(self.N, self.C, h, w, generator=generator).to(device, dtype)
                    for h, w in self.level_shapes()]
        if layout == "nhwc":
            features = [f.contiguous(memory_format=torch.channels_last) for f in features]
        # Box sides from 16 to 60% of the image: every level gets some.
        side = torch.rand(self.boxes, 2, generator=generator) * torch.tensor([self.W, self.H]) * 0.6 + 16
        corner = torch.rand(self.boxes, 2, generator=generator) * (torch.tensor([self.W, self.H]) - side)
        per_image = torch.cat([corner, corner + side], 1).to(device, dtype).chunk(self.N)
        sizes = [(self.H, self.W)] * self.N
        ours = RoIPooler(self.output, sampling_ratio=self.sampling_ratio,
                         spatial_scale=[2.0 ** -(2 + i) for i in range(self.levels)])
        theirs = torchvision.ops.MultiScaleRoIAlign(names, self.output, self.sampling_ratio)

        def call(module, feats):
            if module is ours:
                return ours(feats, list(per_image))
            return theirs(dict(zip(names, feats)), list(per_image), sizes)

        if direction == "fprop":
            return (lambda: [call(ours, features)]), (lambda: [call(theirs, features)])
        grad = None

        def step(module, forward):
            def run():
                nonlocal grad
                feats = [f.detach().requires_grad_() for f in features]
                out = call(module, feats)
                if grad is None:
                    grad = torch.randn(out.shape, generator=generator).to(device, dtype)
                # A level no box picked has no gradient: zeros, on both sides alike.
                grads = torch.autograd.grad(out, feats, grad, allow_unused=True)
                grads = [torch.zeros_like(f) if g is None else g for f, g in zip(feats, grads)]
                return ([out] if forward else []) + grads
            return run
        return step(ours, direction == "all"), step(theirs, direction == "all")

    def directions(self):
        return ("fprop", "dgrad", "all")


def seed_suite() -> List:
    """DESIGN.md's benchmark table: the layers where the lecture shows them."""
    c = ConvCase
    return [
        c("alexnet", "conv1", 3, 227, 227, 96, 11, 11, stride=(4, 4)),
        c("alexnet", "conv2", 96, 27, 27, 256, 5, 5, padding=(2, 2), groups=2),
        c("alexnet", "conv3", 256, 13, 13, 384, 3, 3, padding=(1, 1)),
        c("alexnet", "conv4", 384, 13, 13, 384, 3, 3, padding=(1, 1), groups=2),
        c("alexnet", "conv5", 384, 13, 13, 256, 3, 3, padding=(1, 1)),
        c("vgg16", "conv1_1", 3, 224, 224, 64, 3, 3, padding=(1, 1)),
        c("vgg16", "conv1_2", 64, 224, 224, 64, 3, 3, padding=(1, 1)),
        c("vgg16", "conv2_2", 128, 112, 112, 128, 3, 3, padding=(1, 1)),
        c("vgg16", "conv3_3", 256, 56, 56, 256, 3, 3, padding=(1, 1)),
        c("vgg16", "conv4_3", 512, 28, 28, 512, 3, 3, padding=(1, 1)),
        c("vgg16", "conv5_3", 512, 14, 14, 512, 3, 3, padding=(1, 1)),
        c("googlenet", "conv1", 3, 224, 224, 64, 7, 7, stride=(2, 2), padding=(3, 3)),
        c("googlenet", "3a_1x1", 192, 28, 28, 64, 1, 1),
        c("googlenet", "3a_3x3_reduce", 192, 28, 28, 96, 1, 1),
        c("googlenet", "3a_3x3", 96, 28, 28, 128, 3, 3, padding=(1, 1)),
        c("googlenet", "3a_5x5_reduce", 192, 28, 28, 16, 1, 1),
        c("googlenet", "3a_5x5", 16, 28, 28, 32, 5, 5, padding=(2, 2)),
        c("googlenet", "3a_pool_proj", 192, 28, 28, 32, 1, 1),
        c("resnet50", "conv1", 3, 224, 224, 64, 7, 7, stride=(2, 2), padding=(3, 3)),
        c("resnet50", "56_1x1_reduce", 256, 56, 56, 64, 1, 1),
        c("resnet50", "56_3x3", 64, 56, 56, 64, 3, 3, padding=(1, 1)),
        c("resnet50", "56_1x1_expand", 64, 56, 56, 256, 1, 1),
        c("resnet50", "28_1x1_reduce", 512, 28, 28, 128, 1, 1),
        c("resnet50", "28_3x3", 128, 28, 28, 128, 3, 3, padding=(1, 1)),
        c("resnet50", "28_1x1_expand", 128, 28, 28, 512, 1, 1),
        c("resnet50", "14_1x1_reduce", 1024, 14, 14, 256, 1, 1),
        c("resnet50", "14_3x3", 256, 14, 14, 256, 3, 3, padding=(1, 1)),
        c("resnet50", "14_1x1_expand", 256, 14, 14, 1024, 1, 1),
        c("resnet50", "7_1x1_reduce", 2048, 7, 7, 512, 1, 1),
        c("resnet50", "7_3x3", 512, 7, 7, 512, 3, 3, padding=(1, 1)),
        c("resnet50", "7_1x1_expand", 512, 7, 7, 2048, 1, 1),
        c("resnet50", "downsample_s2", 256, 56, 56, 512, 1, 1, stride=(2, 2)),
        c("resnext50", "3x3_g32_56", 128, 56, 56, 128, 3, 3, padding=(1, 1), groups=32),
        c("resnext50", "3x3_g32_28", 256, 28, 28, 256, 3, 3, padding=(1, 1), groups=32),
        c("resnext50", "3x3_g32_14", 512, 14, 14, 512, 3, 3, padding=(1, 1), groups=32),
        c("resnext50", "3x3_g32_7", 1024, 7, 7, 1024, 3, 3, padding=(1, 1), groups=32),
        c("densenet121", "56_1x1", 224, 56, 56, 128, 1, 1),
        c("densenet121", "56_3x3", 128, 56, 56, 32, 3, 3, padding=(1, 1)),
        c("densenet121", "28_1x1", 480, 28, 28, 128, 1, 1),
        c("densenet121", "28_3x3", 128, 28, 28, 32, 3, 3, padding=(1, 1)),
        c("depthwise", "3x3_32@112", 32, 112, 112, 32, 3, 3, padding=(1, 1), groups=32),
        c("depthwise", "3x3_64@112", 64, 112, 112, 64, 3, 3, padding=(1, 1), groups=64),
        c("depthwise", "3x3_128@56", 128, 56, 56, 128, 3, 3, padding=(1, 1), groups=128),
        c("depthwise", "3x3_256@28", 256, 28, 28, 256, 3, 3, padding=(1, 1), groups=256),
        c("depthwise", "3x3_512@14", 512, 14, 14, 512, 3, 3, padding=(1, 1), groups=512),
        c("depthwise", "5x5_240@14", 240, 14, 14, 240, 5, 5, padding=(2, 2), groups=240),
        c("dilated", "3x3_d2", 512, 64, 64, 512, 3, 3, padding=(2, 2), dilation=(2, 2)),
        c("dilated", "3x3_d4", 512, 64, 64, 512, 3, 3, padding=(4, 4), dilation=(4, 4)),
        c("transposed", "unet_up_2x2_s2", 1024, 28, 28, 512, 2, 2, stride=(2, 2), transposed=True),
        c("transposed", "fcn_4x4_s2", 21, 16, 16, 21, 4, 4, stride=(2, 2), padding=(1, 1), transposed=True),
        c("transposed", "fcn32s_64x64_s32", 21, 7, 7, 21, 64, 64, stride=(32, 32), transposed=True),
        RoiCase("maskrcnn", "roi_align_7x7", "roi_align", 2, 256, 200, 272, 512, 7, 0.25),
        RoiCase("maskrcnn", "roi_align_14x14", "roi_align", 2, 256, 200, 272, 512, 14, 0.25),
        RoiCase("maskrcnn", "roi_pool_7x7", "roi_pool", 2, 256, 200, 272, 512, 7, 0.25),
        RoiCase("maskrcnn", "roi_align_7x7_det", "roi_align", 2, 256, 200, 272, 512, 7, 0.25, deterministic=True),
        FpnCase("maskrcnn", "fpn_pooler_7x7", 2, 256, 800, 1088, 1024, 7),
        c("maskrcnn", "mask_head_3x3", 256, 14, 14, 256, 3, 3, padding=(1, 1), N=100),
        c("maskrcnn", "mask_upconv_2x2_s2", 256, 14, 14, 256, 2, 2, stride=(2, 2), transposed=True, N=100),
        c("text1d", "kim_width3", 300, 1, 64, 100, 1, 3, one_d=True),
        c("text1d", "kim_width4", 300, 1, 64, 100, 1, 4, one_d=True),
        c("text1d", "kim_width5", 300, 1, 64, 100, 1, 5, one_d=True),
    ]


LAYER_KEYS = {"N", "C", "H", "W", "K", "R", "S", "stride", "pad", "padding", "dilation", "groups",
              "output_padding", "op"}


def parse_layer(text: str) -> ConvCase:
    """'N=8,C=64,H=56,W=56,K=64,R=3,stride=1,pad=1,groups=1' (pairs as 2x1; S defaults to R,
    W to H; op=conv2d|conv_transpose2d|conv1d)."""
    fields: Dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"--layer: '{part}' is not KEY=VALUE")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in LAYER_KEYS:
            raise ValueError(f"--layer: unknown key '{key}' (known: {', '.join(sorted(LAYER_KEYS))})")
        fields[key] = value

    def integer(key, default=None):
        if key not in fields:
            if default is None:
                raise ValueError(f"--layer: '{key}' is required")
            return default
        try:
            v = int(fields[key])
        except ValueError:
            raise ValueError(f"--layer: {key}={fields[key]} is not an integer") from None
        return v

    def pair(key, default):
        if key not in fields:
            return default
        try:
            parts = [int(p) for p in fields[key].lower().split("x")]
        except ValueError:
            raise ValueError(f"--layer: {key}={fields[key]} is not an integer or AxB") from None
        if len(parts) not in (1, 2):
            raise ValueError(f"--layer: {key}={fields[key]} is not an integer or AxB")
        return (parts[0], parts[-1])

    op = fields.get("op", "conv2d")
    if op not in ("conv2d", "conv_transpose2d", "conv1d", "conv_transpose1d"):
        raise ValueError(f"--layer: op={op} is not conv2d, conv_transpose2d, conv1d or conv_transpose1d")
    one_d = op.endswith("1d")
    R = integer("R")
    H = 1 if one_d else integer("H")
    case = ConvCase(
        group="layer", name="layer",
        C=integer("C"), H=H, W=integer("W", H if not one_d else None), K=integer("K"),
        R=1 if one_d else R, S=R if one_d else integer("S", R),
        stride=(1, pair("stride", (1, 1))[1]) if one_d else pair("stride", (1, 1)),
        padding=(0, pair("pad", pair("padding", (0, 0)))[1]) if one_d else pair("pad", pair("padding", (0, 0))),
        dilation=(1, pair("dilation", (1, 1))[1]) if one_d else pair("dilation", (1, 1)),
        groups=integer("groups", 1),
        output_padding=pair("output_padding", (0, 0)),
        transposed=op.startswith("conv_transpose"), one_d=one_d,
        N=integer("N") if "N" in fields else None,
    )
    for key in ("C", "W", "K", "R", "S", "groups"):
        if getattr(case, key) <= 0:
            raise ValueError(f"--layer: {key} must be positive")
    return case


def trace_network(model: torch.nn.Module, example: torch.Tensor, group: str) -> List[ConvCase]:
    """The distinct convolutions a model runs on `example`, counted, in order of first use."""
    found: Dict[Tuple, ConvCase] = {}

    def hook(module, inputs, output):
        x = inputs[0]
        transposed = isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
        one_d = x.dim() == 3
        k = module.kernel_size
        as2 = (lambda v: (1, v[0]) if one_d else tuple(v))
        if isinstance(module.padding, str):
            return  # 'same'/'valid' layers: not traced
        H, W = (1, x.shape[-1]) if one_d else tuple(x.shape[-2:])
        key = (type(module).__name__, module.in_channels, H, W, module.out_channels, as2(k),
               as2(module.stride), as2(module.padding), as2(module.dilation), module.groups)
        if key in found:
            found[key].count += 1
            return
        R, S = as2(k)
        found[key] = ConvCase(
            group, f"{len(found) + 1:02d}_{module.__class__.__name__.lower()}", module.in_channels, H, W,
            module.out_channels, R, S, stride=as2(module.stride), padding=as2(module.padding),
            dilation=as2(module.dilation), groups=module.groups,
            output_padding=as2(module.output_padding) if transposed else (0, 0),
            transposed=transposed, one_d=one_d)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def network_model(name: str) -> Tuple[torch.nn.Module, str]:
    """A network by name: from fastconv.models when it has it, else from torchvision.models
    (installed as a test and benchmark baseline). Returns (model, source)."""
    try:
        import fastconv.models as fm  # the model family (when present)

        if name in fm.list_models():
            return fm.get_model(name), "fastconv.models"
    except ImportError:
        pass
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ValueError(f"--suite {name}: fastconv.models has no such model and torchvision is not installed") from None
    if not hasattr(tvm, name):
        raise ValueError(f"--suite {name}: unknown network (neither fastconv.models nor torchvision.models has it)")
    return getattr(tvm, name)(weights=None), "torchvision.models"


def network_suite(name: str, batch: int = 1) -> List[ConvCase]:
    model, source = network_model(name)
    size = 299 if name.startswith("inception") else 224
    return trace_network(model, torch.randn(batch, 3, size, size), name)


def suite(name: str) -> List:
    if name == "seed":
        return seed_suite()
    return network_suite(name)


def geometric_mean(values):
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


# The baselines of a fused network row (--fused): torch's eager eval-mode forward, and
# Inductor's best for inference, torch.compile with freezing (BatchNorm folded, constants
# baked, and on the CPU oneDNN's fused post-ops).
FUSED_BASELINES = ("eager", "compile-freezing")


@dataclasses.dataclass
class NetworkCase:
    """A whole network: torch.nn layers against the same model with its convolutions moved
    onto fastconv (fastconv.convert on a copy). fprop is an inference forward; all is a full
    training step (forward, loss, backward, SGD update). fused: fastconv's side is
    fastconv.fuse() of the converted eval-mode copy (BatchNorms folded, additions and
    activations in conv2d_fused), against `baseline` (FUSED_BASELINES), inference only."""

    group: str
    name: str
    image: int = 224
    count: int = 1
    fused: bool = False
    baseline: str = "eager"

    def __post_init__(self):
        if self.fused:
            self.group = self.name
            self.name = f"fused vs {self.baseline}"

    @property
    def network(self):
        return self.group if self.fused else self.name

    def batch(self, default):
        return default

    def shape_text(self, n):
        return f"N{n} 3x{self.image}x{self.image} whole network"

    def flops(self, n, direction):
        return 0.0  # not a single kernel: no roofline

    def min_bytes(self, n, direction, element_size):
        return 0.0

    def directions(self):
        return ("fprop",) if self.fused else ("fprop", "all")

    def runners(self, n, device, dtype, layout, direction, generator):
        import copy

        import fastconv

        torch.manual_seed(0)
        base_model, _ = network_model(self.network)
        # fastconv.models builds on fastconv's layers: the baseline is the same network on
        # torch's (each layer's own torch.nn class), fastconv's side the converted copy.
        base_model = _on_torch_layers(base_model).to(device, dtype)
        if self.fused:
            base_model.eval()
            _randomise_batchnorms(base_model)
            fast_model = fastconv.fuse(fastconv.convert(copy.deepcopy(base_model)))
        else:
            fast_model = fastconv.convert(copy.deepcopy(base_model))
        memory_format = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        for m in (base_model, fast_model):
            m.to(memory_format=memory_format)
        x = torch.randn(n, 3, self.image, self.image, generator=generator).to(device, dtype)
        x = x.contiguous(memory_format=memory_format)
        target = torch.randint(0, 10, (n,), generator=generator).to(device)

        def make(model, compiled=False):
            if direction == "fprop":
                model.eval()
                if compiled:
                    model = _compile_frozen(model, x)

                def infer():
                    with torch.no_grad():
                        out = model(x)
                    return [out.logits if hasattr(out, "logits") else out]
                return infer
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

            def train_step():
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                out = out.logits if hasattr(out, "logits") else out
                loss = torch.nn.functional.cross_entropy(out.float(), target)
                loss.backward()
                optimizer.step()
                return [loss.detach()]
            return train_step
        return make(fast_model), make(base_model, compiled=self.fused and self.baseline == "compile-freezing")


def _on_torch_layers(model):
    """model with every fastconv.nn convolution turned back into its torch.nn class, in place
    (the classes share their state: fastconv's subclass torch's)."""
    import fastconv.nn as fnn

    torch_class = {fnn.Conv1d: torch.nn.Conv1d, fnn.Conv2d: torch.nn.Conv2d,
                   fnn.ConvTranspose1d: torch.nn.ConvTranspose1d, fnn.ConvTranspose2d: torch.nn.ConvTranspose2d}
    for m in model.modules():
        if type(m) in torch_class:
            m.__class__ = torch_class[type(m)]
    return model


def _randomise_batchnorms(model):
    """Running statistics and affine parameters drawn at random (fixed seed): a fresh
    BatchNorm is nearly the identity, which would flatter neither side but hides a wrong fold
    from the error column."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                k = m.num_features
                m.running_mean.copy_(torch.rand(k, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(k, generator=g) * 0.5 + 0.75)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(k, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.rand(k, generator=g) * 0.2 - 0.1)


def _compile_frozen(model, x):
    """torch.compile with Inductor's freezing on, compiled here (the first call) so that the
    timed calls see the finished code."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True), torch.no_grad():
        compiled = torch.compile(model)
        compiled(x)
    return compiled
