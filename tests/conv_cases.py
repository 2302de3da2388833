"""The convolution case tables: at least as broad as PyTorch's own conv sample inputs, plus
the shapes that break kernels (kernel as large as the input, large strides, per-side padding,
depthwise with a channel multiplier, the lecture's odd layers). Each case is
(name, input shape, weight shape, keyword arguments for torch.nn.functional)."""

CONV2D_CASES = [
    ("basic", (2, 3, 7, 6), (4, 3, 3, 3), {}),
    ("no_bias", (2, 3, 7, 6), (4, 3, 3, 3), {"bias": False}),
    ("stride2_pad2", (1, 3, 4, 4), (3, 3, 3, 3), {"stride": (2, 2), "padding": 2}),
    ("tuple_stride_dilation", (2, 4, 8, 8), (2, 2, 3, 3),
     {"stride": (3, 2), "padding": (2, 1), "groups": 2, "dilation": (4, 4)}),
    ("dilation_2_3", (1, 4, 5, 5), (1, 4, 2, 3), {"stride": 2, "padding": 1, "dilation": (2, 3)}),
    ("asymmetric_padding", (2, 2, 6, 7), (3, 2, 2, 3), {"padding": (2, 0)}),
    ("per_side_padding", (2, 2, 6, 7), (3, 2, 3, 3), {"padding": (0, 2, 3, 1)}),
    ("valid", (1, 4, 5, 5), (1, 4, 2, 3), {"stride": 2, "padding": "valid"}),
    ("same_dilated", (1, 4, 5, 5), (1, 4, 2, 3), {"padding": "same", "dilation": 3}),
    ("same_even_kernel", (2, 3, 6, 5), (4, 3, 4, 2), {"padding": "same"}),
    ("groups2", (2, 4, 6, 5), (6, 2, 3, 2), {"groups": 2}),
    ("groups4", (2, 8, 6, 6), (8, 2, 3, 3), {"groups": 4, "padding": 1}),
    ("depthwise", (2, 4, 6, 6), (4, 1, 3, 3), {"groups": 4}),
    ("depthwise_multiplier", (2, 4, 6, 6), (8, 1, 3, 3), {"groups": 4, "padding": 1}),
    ("depthwise_strided", (2, 4, 7, 6), (4, 1, 3, 3), {"groups": 4, "stride": (3, 2), "padding": (1, 2)}),
    ("depthwise_dilated", (1, 6, 9, 8), (6, 1, 3, 3), {"groups": 6, "dilation": 2, "padding": 2}),
    ("depthwise_5x5_pad_exceeds", (1, 3, 4, 4), (6, 1, 5, 5), {"groups": 3, "padding": 4}),
    ("single_channel", (3, 1, 9, 9), (2, 1, 5, 5), {}),
    ("pointwise", (2, 16, 5, 4), (8, 16, 1, 1), {}),
    ("pointwise_strided", (2, 8, 7, 7), (12, 8, 1, 1), {"stride": 2}),
    ("pointwise_grouped_dilated", (3, 6, 4, 5), (9, 2, 1, 1), {"groups": 3, "dilation": 2}),
    ("pointwise_same", (1, 5, 3, 6), (4, 5, 1, 1), {"padding": "same"}),
    ("pointwise_padded", (2, 4, 3, 3), (4, 4, 1, 1), {"padding": (1, 0)}),
    ("kernel_equals_input", (2, 3, 5, 4), (2, 3, 5, 4), {}),
    ("alexnet_conv1_like", (1, 3, 35, 35), (4, 3, 11, 11), {"stride": 4}),
    ("googlenet_7x7_s2", (1, 3, 20, 20), (4, 3, 7, 7), {"stride": 2, "padding": 3}),
    ("dilated_4", (1, 4, 12, 12), (4, 4, 3, 3), {"dilation": 4, "padding": 4}),
    ("stride_larger_than_kernel", (2, 3, 11, 10), (2, 3, 2, 2), {"stride": 4}),
    ("non_square_everything", (2, 6, 9, 13), (4, 3, 2, 4),
     {"stride": (1, 3), "padding": (1, 2), "dilation": (2, 1), "groups": 2}),
    ("width_one", (2, 3, 7, 1), (2, 3, 3, 1), {"padding": (1, 0)}),
    # Winograd: partial tiles at the bottom and right, and a tile row longer than one run of
    # 32 tiles; padding past the kernel, which makes dgrad's offset negative.
    ("tile_rows_and_runs", (2, 5, 11, 75), (6, 5, 3, 3), {"padding": 1}),
    ("padding_beyond_kernel", (1, 3, 5, 6), (4, 3, 3, 3), {"padding": (3, 0, 1, 4)}),
    # direct_blocked: two blocks of 32 output columns and a partial block of 8 filters, over
    # column phases of stride 2 with a dilation.
    ("stem_blocks", (1, 3, 20, 90), (13, 3, 7, 7), {"stride": 2, "padding": 3, "dilation": (1, 2)}),
    # More channels than one 32-lane run, for the channels-last Winograd.
    ("wide_channels", (1, 40, 6, 7), (36, 40, 3, 3), {"padding": 1}),
    ("batch_zero", (0, 3, 5, 5), (2, 3, 3, 3), {"padding": 1}),
    ("unbatched", (3, 4, 5), (2, 3, 3, 3), {"padding": 1}),
    ("unbatched_depthwise", (4, 6, 6), (8, 1, 3, 3), {"groups": 4}),
]

CONV1D_CASES = [
    ("basic", (2, 4, 9), (3, 4, 3), {}),
    ("stride_pad_dilation", (2, 4, 12), (6, 2, 3), {"stride": 2, "padding": 2, "dilation": 2, "groups": 2}),
    ("same", (2, 3, 10), (4, 3, 4), {"padding": "same"}),
    ("valid_no_bias", (1, 3, 10), (4, 3, 5), {"padding": "valid", "bias": False}),
    ("depthwise", (2, 4, 10), (8, 1, 3), {"groups": 4, "padding": 1}),
    ("kim_text_cnn", (2, 30, 16), (10, 30, 4), {}),
    ("pointwise", (2, 12, 7), (5, 12, 1), {}),
    ("unbatched", (3, 8), (2, 3, 3), {}),
    ("batch_zero", (0, 3, 8), (2, 3, 3), {}),
]

# (name, input shape, weight shape [C_in, C_out/groups, R, S], kwargs of F.conv_transpose2d)
CONV_TRANSPOSE2D_CASES = [
    ("basic", (2, 3, 4, 5), (3, 2, 3, 3), {}),
    ("stride2_pad1_outpad1", (2, 4, 5, 5), (4, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ("unet_upconv", (2, 8, 4, 4), (8, 4, 2, 2), {"stride": 2}),
    ("fcn_4x4_s2_p1", (1, 3, 5, 5), (3, 3, 4, 4), {"stride": 2, "padding": 1}),
    ("fcn32s_64x64_s32", (1, 2, 2, 3), (2, 2, 64, 64), {"stride": 32, "bias": False}),
    ("groups", (2, 4, 5, 4), (4, 3, 3, 2), {"groups": 2, "stride": (2, 1), "padding": (1, 0)}),
    ("depthwise", (2, 4, 5, 5), (4, 1, 3, 3), {"groups": 4, "stride": 2}),
    ("dilated", (2, 3, 5, 4), (3, 2, 3, 2), {"dilation": (2, 3), "padding": 1}),
    ("outpad_below_dilation", (1, 2, 4, 4), (2, 2, 3, 3), {"stride": 1, "dilation": 3, "output_padding": 2}),
    ("per_side_padding", (2, 2, 5, 5), (2, 3, 3, 3), {"stride": 2, "padding": (1, 2, 0, 2)}),
    ("batch_zero", (0, 3, 4, 4), (3, 2, 3, 3), {}),
    ("unbatched", (3, 4, 5), (3, 2, 3, 3), {"stride": 2}),
    ("pointwise", (2, 6, 4, 3), (6, 4, 1, 1), {}),
    ("pointwise_grouped", (2, 6, 4, 3), (6, 1, 1, 1), {"groups": 2}),
    ("pointwise_outpad_below_dilation", (1, 3, 3, 4), (3, 2, 1, 1), {"dilation": 2, "output_padding": 1}),
]

CONV_TRANSPOSE1D_CASES = [
    ("basic", (2, 3, 7), (3, 2, 3), {}),
    ("stride_outpad", (2, 4, 6), (4, 3, 4), {"stride": 3, "padding": 1, "output_padding": 2}),
    ("groups_dilation", (2, 4, 6), (4, 1, 3), {"groups": 2, "dilation": 2}),
    ("unbatched", (3, 7), (3, 2, 3), {"stride": 2}),
]
