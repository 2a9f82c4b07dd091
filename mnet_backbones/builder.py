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


def pyramid_level(stride):
    return f"P{int(math.log2(stride))}"


def stem_filters(arch, width_multiplier):
    if width_multiplier < arch.fix_stem_below:
        return arch.stem
    return scale_filters(arch.stem, width_multiplier, arch.channel_rounding)


def final_conv_filters(arch, width_multiplier):
    """V2's last 1x1 conv: 1280 filters, widened (never narrowed) with the width."""
    return max(arch.final_conv, make_divisible(arch.final_conv * width_multiplier))


def make_block(block, arch, width_multiplier, common, name):
    """The Keras layer for one table row."""
    filters = scale_filters(block.filters, width_multiplier, arch.channel_rounding)
    activation = getattr(block, "activation", None) or arch.activation
    if isinstance(block, Conv):
        return ConvBNAct(
            filters, block.kernel, strides=block.strides, activation=activation, name=name, **common
        )
    if isinstance(block, UIB):
        return InvertedBottleneck(
            filters,
            expand_ratio=block.expand,
            start_kernel=block.start,
            mid_kernel=block.mid,
            end_kernel=block.end,
            strides=block.strides,
            se_ratio=block.se,
            activation=activation,
            project_activation=block.project_activation,
            se_activation=arch.se_activation,
            se_gate=arch.se_gate,
            residual=block.residual,
            layer_scale=arch.layer_scale,
            name=name,
            **common,
        )
    if isinstance(block, FusedIB):
        return FusedInvertedBottleneck(
            filters,
            expand_ratio=block.expand,
            kernel_size=block.kernel,
            strides=block.strides,
            activation=activation,
            name=name,
            **common,
        )
    if isinstance(block, MQA):
        return MobileMultiQueryAttention(
            filters,
            num_heads=block.heads,
            key_dim=block.key_dim,
            kv_strides=block.kv_strides,
            kernel_size=block.kernel,
            layer_scale=arch.layer_scale,
            name=name,
            **common,
        )
    raise TypeError(f"Unknown block type {type(block).__name__}: {block!r}.")


def build_features(
    inputs,
    arch,
    width_multiplier=1.0,
    padding="symmetric",
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    dtype=None,
):
    """Apply the stem, every stage and (V2) the final conv to `inputs`.

    Returns:
        `(output, pyramid)`: the final stride-32 map, and a dict from
        `"P2"`..`"P5"` to the output of the last block at strides 4..32.
    """
    common = dict(padding=padding, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum, dtype=dtype)
    x = ConvBNAct(
        stem_filters(arch, width_multiplier),
        3,
        strides=2,
        activation=arch.activation,
        name="stem",
        **common,
    )(inputs)
    stride = 2
    taps = {}
    for stage_index, stage in enumerate(arch.stages):
        for block_index, block in enumerate(stage):
            name = f"blocks_{stage_index}_{block_index}"
            x = make_block(block, arch, width_multiplier, common, name)(x)
            stride *= block.strides
            taps[stride] = x
    pyramid = {pyramid_level(s): taps[s] for s in PYRAMID_STRIDES}
    if arch.final_conv:
        x = ConvBNAct(
            final_conv_filters(arch, width_multiplier),
            1,
            activation=arch.activation,
            name="final_conv",
            **common,
        )(x)
    return x, pyramid
