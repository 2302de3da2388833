"""Fast / Faster / Mask / Keypoint R-CNN heads: torchvision parity (strict state_dict loads,
equal float64 outputs), RoIAlign / RoIPool pooling, box coding, NMS, and the inference path."""

import math

import pytest
import torch
from torch import nn

import fastconv.models as models
from fastconv.models import detection as det
from model_checks import assert_all_convs_fastconv, assert_same_as_reference, forward_backward

tv = pytest.importorskip("torchvision")
from torchvision.models.detection import faster_rcnn as tv_faster  # noqa: E402
from torchvision.models.detection import keypoint_rcnn as tv_keypoint  # noqa: E402
from torchvision.models.detection import mask_rcnn as tv_mask  # noqa: E402
from torchvision.models.detection import roi_heads as tv_roi_heads  # noqa: E402
from torchvision.models.detection import rpn as tv_rpn  # noqa: E402
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-10)


def random_boxes(n, size, min_side=4.0, max_side=None, generator=None, dtype=torch.float64):
    """n boxes with fractional corners inside a size×size image."""
    max_side = max_side or size / 2
    g = generator
    wh = min_side + (max_side - min_side) * torch.rand(n, 2, generator=g, dtype=dtype)
    xy = (size - wh) * torch.rand(n, 2, generator=g, dtype=dtype)
    return torch.cat([xy, xy + wh], dim=1)


# --------------------------------------------------------------------------- head parity

@pytest.mark.parametrize("conv_depth", [1, 2])
def test_rpn_head_matches_torchvision(conv_depth):
    torch.manual_seed(0)
    ref = tv_rpn.RPNHead(16, 3, conv_depth=conv_depth)
    ours = det.RPNHead(16, 3, conv_depth=conv_depth)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "conv.0.0.weight" in ours.state_dict()
    feats = [torch.randn(2, 16, 12, 12, dtype=torch.float64), torch.randn(2, 16, 6, 6, dtype=torch.float64)]
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours, ref = ours.double().eval(), ref.double().eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(feats), ref(feats), **TOL)
    logits, deltas = ours(feats)
    assert [t.shape for t in logits] == [(2, 3, 12, 12), (2, 3, 6, 6)]
    assert [t.shape for t in deltas] == [(2, 12, 12, 12), (2, 12, 6, 6)]


def test_rpn_head_loads_legacy_single_conv_keys():
    ours = det.RPNHead(8, 3)
    legacy = {("conv.weight" if k == "conv.0.0.weight" else "conv.bias" if k == "conv.0.0.bias" else k): v.clone()
              for k, v in ours.state_dict().items()}
    fresh = det.RPNHead(8, 3)
    fresh.load_state_dict(legacy, strict=True)
    torch.testing.assert_close(fresh.conv[0][0].weight, ours.conv[0][0].weight)


def test_box_head_and_predictor_match_torchvision():
    torch.manual_seed(1)
    crops = torch.randn(6, 16, 7, 7)
    assert_same_as_reference(det.TwoMLPHead(16 * 49, 32), tv_faster.TwoMLPHead(16 * 49, 32), crops, **TOL)
    rep = torch.randn(6, 32)
    ours, ref = det.FastRCNNPredictor(32, 5), tv_faster.FastRCNNPredictor(32, 5)
    assert_same_as_reference(ours, ref, rep, **TOL)
    scores, deltas = ours(rep.double())  # assert_same_as_reference left ours in float64
    assert scores.shape == (6, 5) and deltas.shape == (6, 20)
    assert ours(rep.double()[:, :, None, None])[0].shape == (6, 5)


@pytest.mark.parametrize("dilation,norm", [(1, False), (2, False), (1, True)])
def test_mask_head_matches_torchvision(dilation, norm):
    torch.manual_seed(2)
    norm_layer = (lambda c: nn.GroupNorm(4, c)) if norm else None
    ref = tv_mask.MaskRCNNHeads(16, (16, 16, 16, 16), dilation, norm_layer=norm_layer)
    ours = det.MaskRCNNHeads(16, (16, 16, 16, 16), dilation, norm_layer=norm_layer)
    assert list(ours.state_dict()) == list(ref.state_dict())
    crops = torch.randn(3, 16, 14, 14)
    assert_same_as_reference(ours, ref, crops, **TOL)
    assert ours(crops.double()).shape == (3, 16, 14, 14)


def test_mask_head_loads_legacy_mask_fcn_keys():
    ours = det.MaskRCNNHeads(4, (4, 4), 1)
    legacy = {k.replace("0.0.", "mask_fcn1.").replace("1.0.", "mask_fcn2."): v.clone()
              for k, v in ours.state_dict().items()}
    assert set(legacy) == {"mask_fcn1.weight", "mask_fcn1.bias", "mask_fcn2.weight", "mask_fcn2.bias"}
    fresh = det.MaskRCNNHeads(4, (4, 4), 1)
    fresh.load_state_dict(legacy, strict=True)
    torch.testing.assert_close(fresh[1][0].weight, ours[1][0].weight)


def test_mask_predictor_matches_torchvision_and_upsamples_to_28():
    torch.manual_seed(3)
    ref, ours = tv_mask.MaskRCNNPredictor(16, 8, 5), det.MaskRCNNPredictor(16, 8, 5)
    assert list(ours.state_dict()) == ["conv5_mask.weight", "conv5_mask.bias",
                                       "mask_fcn_logits.weight", "mask_fcn_logits.bias"]
    crops = torch.randn(3, 16, 14, 14)
    assert_same_as_reference(ours, ref, crops, **TOL)
    assert ours(crops.double()).shape == (3, 5, 28, 28)


def test_keypoint_head_and_predictor_match_torchvision():
    torch.manual_seed(4)
    layers = (16,) * 8
    ref, ours = tv_keypoint.KeypointRCNNHeads(16, layers), det.KeypointRCNNHeads(16, layers)
    assert list(ours.state_dict()) == list(ref.state_dict())
    crops = torch.randn(2, 16, 14, 14)
    assert_same_as_reference(ours, ref, crops, **TOL)
    ref_p, ours_p = tv_keypoint.KeypointRCNNPredictor(16, 17), det.KeypointRCNNPredictor(16, 17)
    assert_same_as_reference(ours_p, ref_p, crops, **TOL)
    heatmaps = ours_p(ours(crops.double()))
    assert heatmaps.shape == (2, 17, 56, 56)


# --------------------------------------------------------------------------- pooling parity

@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("output_size", [7, 14])
def test_single_level_roi_align_matches_torchvision(aligned, output_size):
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 8, 16, 20, generator=g, dtype=torch.float64)
    boxes = [random_boxes(5, 128, generator=g), random_boxes(3, 128, generator=g)]
    pooler = det.RoIPooler(output_size, "align", sampling_ratio=2, aligned=aligned, spatial_scale=1 / 8)
    ours = pooler(feats, boxes)
    ref = tv.ops.roi_align(feats, boxes, output_size, spatial_scale=1 / 8, sampling_ratio=2, aligned=aligned)
    assert ours.shape == (8, 8, output_size, output_size)
    torch.testing.assert_close(ours, ref, **TOL)


def test_scale_inference_matches_multiscale_roi_align():
    g = torch.Generator().manual_seed(6)
    feats = {"0": torch.randn(2, 4, 32, 32, generator=g, dtype=torch.float64)}
    boxes = [random_boxes(4, 128, generator=g), random_boxes(2, 100, generator=g)]
    sizes = [(128, 128), (100, 120)]
    ref = MultiScaleRoIAlign(["0"], 14, 2)(feats, boxes, sizes)
    ours = det.RoIPooler(14, featmap_names=["0"])(feats, boxes, sizes)
    torch.testing.assert_close(ours, ref, **TOL)


def test_fpn_level_assignment_matches_multiscale_roi_align():
    g = torch.Generator().manual_seed(7)
    sizes = [(256, 256), (240, 256)]
    feats = {name: torch.randn(2, 3, 256 // s, 256 // s, generator=g, dtype=torch.float64)
             for name, s in (("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64))}
    # Sides from 8 to 250 px: FPN levels 2 to 4 (level 5 would need boxes over 448 px).
    large = torch.tensor([[0.0, 3.5, 250.0, 239.0], [10.25, 1.0, 245.0, 238.0]], dtype=torch.float64)
    boxes = [torch.cat([random_boxes(12, 240, min_side=8, max_side=235, generator=g), large]),
             random_boxes(9, 240, min_side=8, max_side=235, generator=g)]
    ref = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, boxes, sizes)
    pooler = det.RoIPooler(7, featmap_names=["0", "1", "2", "3"])
    torch.testing.assert_close(pooler(feats, boxes, sizes), ref, **TOL)
    # The same levels as a list with explicit scales.
    listed = det.RoIPooler(7, spatial_scale=[1 / 4, 1 / 8, 1 / 16, 1 / 32])
    torch.testing.assert_close(listed([feats[k] for k in "0123"], boxes), ref, **TOL)
    # Boxes of these sizes really are spread over several levels.
    side = torch.sqrt(det.box_area(torch.cat(boxes)))
    assert len(set(torch.floor(4 + torch.log2(side / 224) + 1e-6).clamp(2, 5).tolist())) >= 3


def test_roi_pool_option_matches_torchvision_roi_pool():
    g = torch.Generator().manual_seed(8)
    feats = torch.randn(2, 4, 16, 16, generator=g, dtype=torch.float64)
    boxes = [random_boxes(5, 128, generator=g), random_boxes(4, 128, generator=g)]
    pooled = det.RoIPooler(7, "pool", spatial_scale=1 / 8)(feats, boxes)
    torch.testing.assert_close(pooled, tv.ops.roi_pool(feats, boxes, 7, spatial_scale=1 / 8), **TOL)
    aligned = det.RoIPooler(7, "align", spatial_scale=1 / 8)(feats, boxes)
    assert (pooled - aligned).abs().max() > 0.1  # the two poolings really differ


# --------------------------------------------------------------------------- second stage parity

def _tv_and_our_roi_heads(channels=8, num_classes=4, pooling_names=("0", "1")):
    names = list(pooling_names)
    ref = tv_roi_heads.RoIHeads(
        MultiScaleRoIAlign(names, 7, 2), tv_faster.TwoMLPHead(channels * 49, 32),
        tv_faster.FastRCNNPredictor(32, num_classes),
        0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 100,
        mask_roi_pool=MultiScaleRoIAlign(names, 14, 2), mask_head=tv_mask.MaskRCNNHeads(channels, (8, 8), 1),
        mask_predictor=tv_mask.MaskRCNNPredictor(8, 8, num_classes),
        keypoint_roi_pool=MultiScaleRoIAlign(names, 14, 2),
        keypoint_head=tv_keypoint.KeypointRCNNHeads(channels, (8, 8)),
        keypoint_predictor=tv_keypoint.KeypointRCNNPredictor(8, 17),
    )
    ours = det.RoIHeads(
        det.RoIPooler(7, featmap_names=names), det.TwoMLPHead(channels * 49, 32),
        det.FastRCNNPredictor(32, num_classes),
        mask_roi_pool=det.RoIPooler(14, featmap_names=names), mask_head=det.MaskRCNNHeads(channels, (8, 8), 1),
        mask_predictor=det.MaskRCNNPredictor(8, 8, num_classes),
        keypoint_roi_pool=det.RoIPooler(14, featmap_names=names),
        keypoint_head=det.KeypointRCNNHeads(channels, (8, 8)),
        keypoint_predictor=det.KeypointRCNNPredictor(8, 17),
        paste_masks=False,
    )
    return ref, ours


def test_roi_heads_inference_matches_torchvision():
    torch.manual_seed(9)
    ref, ours = _tv_and_our_roi_heads()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref, ours = ref.double().eval(), ours.double().eval()
    g = torch.Generator().manual_seed(9)
    feats = {"0": torch.randn(2, 8, 32, 32, generator=g, dtype=torch.float64),
             "1": torch.randn(2, 8, 16, 16, generator=g, dtype=torch.float64)}
    sizes = [(128, 128), (120, 100)]
    proposals = [random_boxes(16, 120, min_side=8, max_side=100, generator=g),
                 random_boxes(12, 100, min_side=8, max_side=90, generator=g)]
    with torch.no_grad():
        expected, _ = ref(feats, proposals, sizes)
        got = ours(feats, proposals, sizes)
    assert len(got) == 2
    total = 0
    for r, e in zip(got, expected):
        assert set(r) == set(e) == {"boxes", "labels", "scores", "masks", "keypoints", "keypoints_scores"}
        total += len(e["boxes"])
        torch.testing.assert_close(r["labels"], e["labels"])
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(r[key], e[key], **TOL)
        # torchvision returns keypoints in float32 whatever the input dtype.
        for key in ("keypoints", "keypoints_scores"):
            torch.testing.assert_close(r[key], e[key], check_dtype=False, rtol=1e-5, atol=1e-4)
    assert total > 10  # random weights give many detections: the comparison is not vacuous


# --------------------------------------------------------------------------- builders

def test_builders_load_torchvision_roi_heads_strict(tmp_path):
    torch.manual_seed(10)
    tv_model = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = tv_model.roi_heads.state_dict()
    heads = models.get_model("maskrcnn_heads", weights=state)
    assert sum(p.numel() for p in heads.parameters()) == sum(p.numel() for p in tv_model.roi_heads.parameters())
    assert assert_all_convs_fastconv(heads) == 6
    torch.testing.assert_close(heads.mask_predictor.conv5_mask.weight,
                               tv_model.roi_heads.mask_predictor.conv5_mask.weight)
    box_only = {k: v for k, v in state.items() if k.startswith("box_")}
    torch.save(box_only, tmp_path / "box.pt")
    faster = models.get_model("fasterrcnn_heads", weights=tmp_path / "box.pt")
    torch.testing.assert_close(faster.box_head.fc6.weight, tv_model.roi_heads.box_head.fc6.weight)
    rpn = det.RPNHead(256, 3)
    rpn.load_state_dict(tv_model.rpn.head.state_dict(), strict=True)
    assert assert_all_convs_fastconv(rpn) == 3
    del tv_model

    kp_model = tv.models.detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    kp_heads = models.get_model("keypointrcnn_heads", weights=kp_model.roi_heads.state_dict())
    assert sum(p.numel() for p in kp_heads.parameters()) == sum(p.numel() for p in kp_model.roi_heads.parameters())
    assert assert_all_convs_fastconv(kp_heads) == 9


# --------------------------------------------------------------------------- boxes and NMS

def test_box_coder_round_trip_and_torchvision_agreement():
    g = torch.Generator().manual_seed(11)
    proposals = random_boxes(50, 200, generator=g)
    targets = proposals + 6 * torch.randn(50, 4, generator=g, dtype=torch.float64)
    targets[:, 2:] = torch.maximum(targets[:, 2:], targets[:, :2] + 1)
    ours, ref = det.BoxCoder(), TvBoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = ours.encode(targets, proposals)
    torch.testing.assert_close(deltas, ref.encode_single(targets, proposals), **TOL)
    torch.testing.assert_close(ours.decode(deltas, proposals), targets, rtol=1e-9, atol=1e-9)
    per_class = torch.randn(50, 4 * 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours.decode(per_class, proposals), ref.decode_single(per_class, proposals), **TOL)
    # The dw / dh clamp keeps a wild prediction finite: exp(log(1000/16)) times the width.
    wild = torch.tensor([[0.0, 0.0, 500.0, 500.0]], dtype=torch.float64)
    out = ours.decode(wild, proposals[:1])
    width = (proposals[0, 2] - proposals[0, 0]).item()
    assert torch.isfinite(out).all()
    assert math.isclose((out[0, 2] - out[0, 0]).item(), width * 1000 / 16, rel_tol=1e-9)
    rpn_coder = det.BoxCoder((1.0, 1.0, 1.0, 1.0))
    torch.testing.assert_close(rpn_coder.encode(targets, proposals),
                               TvBoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(targets, proposals), **TOL)


def test_clip_and_iou_match_torchvision():
    g = torch.Generator().manual_seed(12)
    boxes = random_boxes(30, 100, generator=g) * 1.5 - 20
    torch.testing.assert_close(det.clip_boxes_to_image(boxes, (90, 110)), tv.ops.clip_boxes_to_image(boxes, (90, 110)))
    clipped = det.clip_boxes_to_image(boxes.reshape(10, 3, 4), (90, 110))
    assert clipped.shape == (10, 3, 4) and clipped[..., 0::2].max() <= 110 and clipped[..., 1::2].max() <= 90
    other = random_boxes(7, 100, generator=g)
    torch.testing.assert_close(det.box_iou(boxes, other), tv.ops.box_iou(boxes, other))
    torch.testing.assert_close(det.remove_small_boxes(boxes, 10.0), tv.ops.remove_small_boxes(boxes, 10.0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_own_nms_equals_torchvision(seed, iou_threshold):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(120, 100, min_side=5, max_side=40, generator=g, dtype=torch.float32)
    boxes[60:70] = boxes[:10]  # exact duplicates
    # Scores on a coarse grid: many ties, which both must break by input order.
    scores = torch.randint(0, 6, (120,), generator=g).float() / 5
    idxs = torch.randint(0, 3, (120,), generator=g)
    ours = det.nms(boxes, scores, iou_threshold, use_torchvision=False)
    torch.testing.assert_close(ours, tv.ops.nms(boxes, scores, iou_threshold))
    ours_b = det.batched_nms(boxes, scores, idxs, iou_threshold, use_torchvision=False)
    torch.testing.assert_close(ours_b, tv.ops.batched_nms(boxes, scores, idxs, iou_threshold))
    assert len(ours_b) >= len(ours) > 0
    # The default uses torchvision here, and agrees too.
    torch.testing.assert_close(det.batched_nms(boxes, scores, idxs, iou_threshold), ours_b)


def test_own_nms_handles_empty_and_all_ties():
    empty = torch.zeros(0, 4)
    for use_tv in (False, True):
        assert det.nms(empty, torch.zeros(0), 0.5, use_torchvision=use_tv).shape == (0,)
        assert det.batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5,
                               use_torchvision=use_tv).dtype == torch.int64
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4 + [[20.0, 20.0, 30.0, 30.0]])
    scores = torch.full((5,), 0.5)
    ours = det.nms(same, scores, 0.5, use_torchvision=False)
    assert ours.tolist() == tv.ops.nms(same, scores, 0.5).tolist() == [0, 4]


def test_without_torchvision_the_own_nms_serves_the_detector(monkeypatch):
    torch.manual_seed(18)
    heads = _small_mask_heads(score_thresh=0.1, paste_masks=False).eval()
    g = torch.Generator().manual_seed(18)
    feats = torch.randn(1, 8, 16, 16)
    proposals = [random_boxes(30, 128, generator=g, dtype=torch.float32)]
    with torch.no_grad():
        with_tv = heads(feats, proposals, [(128, 128)])[0]
        monkeypatch.setattr(det.box_ops, "_TORCHVISION_OPS", [None])  # as if torchvision were not importable
        without = heads(feats, proposals, [(128, 128)])[0]
    assert len(with_tv["boxes"]) > 3
    for key in with_tv:
        torch.testing.assert_close(without[key], with_tv[key])
    with pytest.raises(RuntimeError, match="torchvision"):
        det.nms(torch.zeros(1, 4), torch.zeros(1), 0.5, use_torchvision=True)


# --------------------------------------------------------------------------- masks and keypoints

def test_paste_masks_in_image_places_box_exactly():
    boxes = torch.tensor([[10.3, 20.6, 30.2, 50.9], [-5.0, 40.0, 12.5, 70.0], [50.0, 50.0, 50.0, 60.0]])
    masks = torch.ones(3, 1, 28, 28)
    soft = det.paste_masks_in_image(masks, boxes, (64, 48))
    assert soft.shape == (3, 1, 64, 48) and soft.min() >= 0 and soft.max() <= 1
    hard = det.paste_masks_in_image(masks, boxes, (64, 48), threshold=0.5)
    assert hard.dtype == torch.bool
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(48) + 0.5, indexing="ij")
    for i in range(2):
        x1, y1, x2, y2 = boxes[i].tolist()
        inside = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)
        assert torch.equal(hard[i, 0], inside)
    assert not hard[2].any()  # an empty box pastes nothing
    # A mask that is on in its left half pastes to the left half of the box.
    half = torch.zeros(1, 28, 28)
    half[:, :, :14] = 1
    pasted = det.paste_masks_in_image(half, boxes[:1], (64, 48), threshold=0.5)[0, 0]
    centre = (boxes[0, 0] + boxes[0, 2]).item() / 2
    cols = torch.nonzero(pasted.any(0)).squeeze(1).float() + 0.5
    assert cols.min() > boxes[0, 0] and cols.max() < centre
    assert det.paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 1, 5, 6)


def test_heatmaps_to_keypoints_matches_torchvision():
    g = torch.Generator().manual_seed(13)
    maps = torch.randn(4, 17, 56, 56, generator=g)
    rois = random_boxes(4, 200, min_side=0.5, max_side=90, generator=g, dtype=torch.float32)
    ours_xy, ours_s = det.heatmaps_to_keypoints(maps, rois)
    ref_xy, ref_s = tv_roi_heads.heatmaps_to_keypoints(maps, rois)
    assert ours_xy.shape == (4, 17, 3) and ours_s.shape == (4, 17)
    torch.testing.assert_close(ours_xy, ref_xy, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(ours_s, ref_s, rtol=1e-6, atol=1e-6)
    # A single peak lands on its own pixel of the box.
    peak = torch.full((1, 1, 56, 56), -1.0)
    peak[0, 0, 14, 42] = 5.0
    xy, _ = det.heatmaps_to_keypoints(peak, torch.tensor([[100.0, 200.0, 156.0, 256.0]]))
    assert xy[0, 0, :2].tolist() == [142.5, 214.5]


# --------------------------------------------------------------------------- the inference path

def _small_mask_heads(pooling="align", **kwargs):
    return models.get_model(
        "maskrcnn_heads", num_classes=4, in_channels=8, representation_size=32, mask_layers=(8, 8, 8, 8),
        mask_dim_reduced=8, spatial_scale=1 / 8, pooling=pooling, **kwargs,
    )


@pytest.mark.parametrize("pooling", ["align", "pool"])
def test_mask_inference_outputs_are_well_formed(device, pooling):
    torch.manual_seed(14)
    heads = _small_mask_heads(pooling, score_thresh=0.2, detections_per_img=7, mask_threshold=0.5).to(device).eval()
    assert isinstance(heads.mask_roi_pool, det.RoIPooler) and heads.mask_roi_pool.pooling == pooling
    feats = torch.randn(3, 8, 16, 16, device=device)
    sizes = [(128, 128), (100, 120), (128, 90)]
    g = torch.Generator().manual_seed(14)
    # Proposals that run past the image edge must come back clipped.
    proposals = [(random_boxes(20, 140, generator=g, dtype=torch.float32) - 6).to(device),
                 torch.zeros(0, 4, device=device),
                 random_boxes(15, 128, generator=g, dtype=torch.float32).to(device)]
    with torch.no_grad():
        results = heads(feats, proposals, sizes)
    assert len(results) == 3
    for r, (h, w) in zip(results, sizes):
        n = len(r["boxes"])
        assert n <= 7
        assert r["boxes"].shape == (n, 4) and r["labels"].shape == (n,) and r["scores"].shape == (n,)
        assert r["masks"].shape == (n, 1, h, w) and r["masks"].dtype == torch.bool
        assert r["labels"].dtype == torch.int64 and ((r["labels"] >= 1) & (r["labels"] < 4)).all()
        assert (r["scores"] > 0.2).all() and (r["scores"][:-1] >= r["scores"][1:]).all()
        b = r["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        for box, mask in zip(b.cpu(), r["masks"].cpu()):
            ys, xs = torch.nonzero(mask[0], as_tuple=True)
            if len(xs):  # every mask pixel lies in (or on the edge of) its box
                assert xs.min() >= math.floor(box[0]) - 1 and xs.max() <= math.ceil(box[2])
                assert ys.min() >= math.floor(box[1]) - 1 and ys.max() <= math.ceil(box[3])
    assert len(results[0]["boxes"]) > 0 and len(results[1]["boxes"]) == 0
    soft = _small_mask_heads(pooling).to(device).eval()
    soft.load_state_dict(heads.state_dict())
    with torch.no_grad():
        probs = soft(feats, proposals, sizes)[0]["masks"]
    assert probs.is_floating_point() and probs.min() >= 0 and probs.max() <= 1


def test_all_proposals_empty():
    heads = _small_mask_heads().eval()
    with torch.no_grad():
        out = heads(torch.randn(2, 8, 8, 8), [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 64), (64, 60)])
    assert [r["boxes"].shape for r in out] == [(0, 4), (0, 4)]
    assert [r["masks"].shape for r in out] == [(0, 1, 64, 64), (0, 1, 64, 60)]


def test_keypoint_inference_outputs_are_well_formed():
    torch.manual_seed(15)
    heads = models.get_model("keypointrcnn_heads", in_channels=8, representation_size=16,
                             keypoint_layers=(8, 8), spatial_scale=1 / 4, score_thresh=0.0).eval()
    g = torch.Generator().manual_seed(15)
    proposals = [random_boxes(6, 64, generator=g, dtype=torch.float32)]
    with torch.no_grad():
        (r,) = heads(torch.randn(1, 8, 16, 16), proposals, [(64, 64)])
    n = len(r["boxes"])
    assert n > 0 and r["keypoints"].shape == (n, 17, 3) and r["keypoints_scores"].shape == (n, 17)
    kx, ky = r["keypoints"][..., 0], r["keypoints"][..., 1]
    b = r["boxes"][:, None, :]
    assert ((kx >= b[..., 0]) & (kx <= b[..., 2]) & (ky >= b[..., 1]) & (ky <= b[..., 3])).all()


# --------------------------------------------------------------------------- training-time use

class _MaskBranch(nn.Module):
    """Pooling + mask head + predictor, trained as in the example."""

    def __init__(self, pooling):
        super().__init__()
        self.pool = det.RoIPooler(14, pooling, aligned=True, spatial_scale=1 / 8)
        self.head = det.MaskRCNNHeads(8, (8, 8), 1)
        self.predictor = det.MaskRCNNPredictor(8, 8, 2)

    def forward(self, features, boxes):
        return self.predictor(self.head(self.pool(features, boxes)))


class _RPNFlat(nn.Module):
    def __init__(self):
        super().__init__()
        self.rpn = det.RPNHead(8, 3)

    def forward(self, a, b):
        logits, deltas = self.rpn([a, b])
        return tuple(logits) + tuple(deltas)


@pytest.mark.parametrize("pooling", ["align", "pool"])
def test_mask_branch_forward_backward(device, pooling):
    torch.manual_seed(16)
    branch = _MaskBranch(pooling).to(device)
    assert assert_all_convs_fastconv(branch) == 4
    feats = torch.randn(2, 8, 12, 12, device=device, requires_grad=True)
    boxes = [torch.tensor([[4.5, 8.25, 60.0, 70.0], [30.0, 2.0, 90.0, 40.5]], device=device),
             torch.tensor([[10.0, 10.0, 50.0, 33.3]], device=device)]
    out = forward_backward(branch, feats, boxes)
    assert out.shape == (3, 2, 28, 28)
    assert feats.grad is not None and feats.grad.abs().sum() > 0  # gradients reach the backbone
    assert all(p.grad is not None for p in branch.parameters())


def test_box_keypoint_rpn_forward_backward(device):
    torch.manual_seed(17)
    box = nn.Sequential(det.TwoMLPHead(8 * 49, 16), det.FastRCNNPredictor(16, 3)).to(device)
    scores, deltas = forward_backward(box, torch.randn(4, 8, 7, 7, device=device))
    assert scores.shape == (4, 3) and deltas.shape == (4, 12)
    kp = nn.Sequential(det.KeypointRCNNHeads(8, (8, 8)), det.KeypointRCNNPredictor(8, 17)).to(device)
    assert forward_backward(kp, torch.randn(2, 8, 14, 14, device=device)).shape == (2, 17, 56, 56)
    rpn = _RPNFlat().to(device)
    outs = forward_backward(rpn, torch.randn(1, 8, 10, 10, device=device), torch.randn(1, 8, 5, 5, device=device))
    assert len(outs) == 4
    assert all(p.grad is not None for p in rpn.parameters())


# --------------------------------------------------------------------------- bad inputs

def test_bad_arguments_raise_clearly():
    with pytest.raises(ValueError, match="pooling"):
        det.RoIPooler(7, "bilinear")
    with pytest.raises(ValueError, match="pooling"):
        models.get_model("maskrcnn_heads", pooling="max")
    with pytest.raises(ValueError, match="num_classes"):
        models.get_model("maskrcnn_heads", num_classes=0)
    with pytest.raises(TypeError, match="num_classes"):
        det.FastRCNNPredictor(8, True)
    with pytest.raises(TypeError, match="mask_layers"):
        models.get_model("maskrcnn_heads", mask_layers=())
    with pytest.raises(ValueError, match="num_anchors"):
        det.RPNHead(8, 0)
    with pytest.raises(ValueError, match="weights"):
        det.BoxCoder((10.0, 10.0, 5.0))
    with pytest.raises(ValueError, match="score_thresh"):
        _small_mask_heads(score_thresh=1.5)
    with pytest.raises(ValueError, match="mask_roi_pool"):
        det.RoIHeads(det.RoIPooler(7, spatial_scale=1.0), det.TwoMLPHead(4, 4), det.FastRCNNPredictor(4, 2),
                     mask_head=det.MaskRCNNHeads(4, (4,), 1))
    with pytest.raises(ValueError, match="spatial_scale"):
        det.RoIPooler(7, spatial_scale=0.0)


def test_bad_inputs_raise_clearly():
    heads = _small_mask_heads().eval()
    feats = torch.randn(2, 8, 8, 8)
    box = torch.tensor([[1.0, 1.0, 20.0, 20.0]])
    with pytest.raises(ValueError, match="proposals"):
        heads(feats, [box], [(64, 64), (64, 64)])  # two images, one box list
    with pytest.raises(ValueError, match=r"proposals\[1\]"):
        heads(feats, [box, torch.zeros(3, 5)], [(64, 64), (64, 64)])
    with pytest.raises(TypeError, match="proposals"):
        heads(feats, torch.zeros(2, 4), [(64, 64), (64, 64)])
    with pytest.raises(ValueError, match="image_sizes"):
        heads(feats, [box, box], [(64, 64)])
    with pytest.raises(ValueError, match=r"image_sizes\[1\]"):
        heads(feats, [box, box], [(64, 64), (0, 64)])
    with pytest.raises(TypeError, match="features"):
        heads("features", [box, box], [(64, 64), (64, 64)])
    with pytest.raises(ValueError, match="image_sizes"):
        det.RoIPooler(7)(feats, [box, box])  # no scale and nothing to infer it from
    with pytest.raises(ValueError, match="no level named"):
        det.RoIPooler(7, featmap_names=["p2"])({"0": feats}, [box, box], [(64, 64)] * 2)
    with pytest.raises(ValueError, match="power-of-two"):
        det.RoIPooler(7, spatial_scale=[0.25, 0.1])([feats, feats], [box, box])
    with pytest.raises(ValueError, match=r"\[K, C, 1, 1\]"):
        det.FastRCNNPredictor(8, 3)(torch.randn(2, 8, 2, 2))
    with pytest.raises(ValueError, match="scores"):
        det.nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="masks"):
        det.paste_masks_in_image(torch.zeros(2, 28, 28), box, (64, 64))
    with pytest.raises(ValueError, match="deltas"):
        det.BoxCoder().decode(torch.zeros(1, 6), box)
    with pytest.raises(TypeError, match="RPNHead input"):
        det.RPNHead(8, 3)("not a feature map")
