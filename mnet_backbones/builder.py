"""One builder: an `Architecture` table in, a Keras graph and its pyramid out."""

import math

from mnet_backbones.architectures import MQA, UIB, Conv, FusedIB, make_divisible, scale_filters
from mnet_backbones.layers import (
    ConvBNAct,
    FusedInvertedBottleneck,
    InvertedBottleneck,
    MobileMultiQueryAttention,
)

PYRAMID_STRIDES = (4, 8, 16, 32)
OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(output_stride):
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}.")
    return int(output_stride)


def pyramid_level(stride):
    return f"P{int(math.log2(stride))}"


def stem_filters(arch, width_multiplier):
    if width_multiplier < arch.fix_stem_below:
        return arch.stem
    return scale_filters(arch.stem, width_multiplier, arch.channel_rounding)


def final_conv_filters(arch, width_multiplier):
    """V2's last 1x1 conv: 1280 filters, widened (never narrowed) with the width."""
    return max(arch.final_conv, make_divisible(arch.final_conv * width_multiplier))


def make_block(block, arch, width_multiplier, common, name, strides=None, dilation_rate=1, return_expansion=False):
    """The Keras layer for one table row.

    `strides` (default: the row's) and `dilation_rate` let the builder turn a
    stride into dilation of this and later blocks; `return_expansion` makes
    a UIB or FusedIB layer return `(output, expansion)`."""
    filters = scale_filters(block.filters, width_multiplier, arch.channel_rounding)
    layer = dict(name=name, **common)
    if isinstance(block, MQA):
        # Attention is global, so a denser map needs no dilation here; the
        # key/value downsampling keeps its stride (Keras convolutions cannot
        # combine stride and dilation) and still halves the tokens it attends to.
        return MobileMultiQueryAttention(
            filters,
            num_heads=block.heads,
            key_dim=block.key_dim,
            kv_strides=block.kv_strides,
            kernel_size=block.kernel,
            layer_scale=arch.layer_scale,
            **layer,
        )
    layer.update(
        strides=block.strides if strides is None else strides,
        activation=block.activation or arch.activation,
    )
    if isinstance(block, Conv):
        return ConvBNAct(filters, block.kernel, dilation_rate=dilation_rate if block.kernel > 1 else 1, **layer)
    layer.update(dilation_rate=dilation_rate, return_expansion=return_expansion)
    if isinstance(block, UIB):
        return InvertedBottleneck(
            filters,
            expand_ratio=block.expand,
            start_kernel=block.start,
            mid_kernel=block.mid,
            end_kernel=block.end,
            se_ratio=block.se,
            project_activation=block.project_activation,
            se_activation=arch.se_activation,
            se_gate=arch.se_gate,
            residual=block.residual,
            layer_scale=arch.layer_scale,
            **layer,
        )
    if isinstance(block, FusedIB):
        return FusedInvertedBottleneck(filters, expand_ratio=block.expand, kernel_size=block.kernel, **layer)
    raise TypeError(f"Unknown block type {type(block).__name__}: {block!r}.")


def has_expansion(block):
    """Whether a table row has an expansion convolution (a tap point)."""
    return isinstance(block, FusedIB) or (isinstance(block, UIB) and bool(block.expand))


def expansion_tapped(block):
    """Whether the builder taps this row's expansion: strided rows that have one.

    Decided on the table's stride, so that every backbone of an architecture
    has the same taps whatever its `output_stride`."""
    return block.strides > 1 and has_expansion(block)


def build_features(
    inputs,
    arch,
    width_multiplier=1.0,
    padding="symmetric",
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    output_stride=32,
    hard_swish_form="fused",
    dilate_strided_block=False,
    dtype=None,
):
    """Apply the stem, every stage and (V2) the final conv to `inputs`.

    With `output_stride` 16 or 8, a block that would take the map beyond that
    stride keeps stride 1 and every later depthwise kernel is dilated by the
    stride it skipped (DeepLab's atrous trick). The skipping block itself
    keeps the dilation before it, as timm does, or with
    `dilate_strided_block=True` takes the new one, as torchvision's
    MobileNetV3 does (`dilated=True`). Weights are unchanged either way.

    Returns:
        `(output, pyramid, taps)`: the final map; a dict from `"P2"`..`"P5"`
        to the output of the last block at nominal strides 4..32 (real
        strides `min(nominal, output_stride)`); and the named feature taps:
        `"stem"`, `"blocks.{s}.{i}"` for every block, `"blocks.{s}.{i}.expansion"`
        for every strided block with an expansion convolution, and `"final"`.
    """
    output_stride = check_output_stride(output_stride)
    common = dict(
        padding=padding, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum, hard_swish_form=hard_swish_form, dtype=dtype
    )
    x = ConvBNAct(
        stem_filters(arch, width_multiplier),
        3,
        strides=2,
        activation=arch.activation,
        name="stem",
        **common,
    )(inputs)
    feature_taps = {"stem": x}
    stride = 2  # nominal: what the table gives, and what names the level
    real_stride = 2
    dilation = 1
    last_at_stride = {}
    for stage_index, stage in enumerate(arch.stages):
        for block_index, block in enumerate(stage):
            name = f"blocks_{stage_index}_{block_index}"
            strides, block_dilation = block.strides, dilation
            if strides > 1 and real_stride * strides > output_stride:
                dilation *= strides
                strides = 1
                if dilate_strided_block:
                    block_dilation = dilation
            real_stride *= strides
            tapped = expansion_tapped(block)
            layer = make_block(
                block,
                arch,
                width_multiplier,
                common,
                name,
                strides=strides,
                dilation_rate=block_dilation,
                return_expansion=tapped,
            )
            tap_name = f"blocks.{stage_index}.{block_index}"
            if tapped:
                x, feature_taps[f"{tap_name}.expansion"] = layer(x)
            else:
                x = layer(x)
            feature_taps[tap_name] = x
            stride *= block.strides
            last_at_stride[stride] = x
    pyramid = {pyramid_level(s): last_at_stride[s] for s in PYRAMID_STRIDES}
    if arch.final_conv:
        x = ConvBNAct(
            final_conv_filters(arch, width_multiplier),
            1,
            activation=arch.activation,
            name="final_conv",
            **common,
        )(x)
    feature_taps["final"] = x
    return x, pyramid, feature_taps
