"""The MobileNet family as data.

Every architecture is a table of stages, every stage a tuple of blocks. A block
is one of four small records (`Conv`, `UIB`, `FusedIB`, `MQA`) whose fields
name what they mean. One builder (`builder.py`) turns any table into a Keras
graph, and the weight converters walk the same tables, so a variant is defined
once, here.

The tables follow timm 1.0 (`mobilenetv3.py`, `efficientnet.py`), which for
V1-V3 agrees block for block with `keras.applications`. Stages follow timm's
stage boundaries, so that `stages[i][j]` is timm's `blocks.i.j`.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Conv:
    """Convolution, BatchNorm, activation (timm `cn`, the V4 conv stages)."""

    filters: int
    kernel: int = 1
    strides: int = 1
    activation: str | None = None  # None: the architecture's activation


@dataclasses.dataclass(frozen=True)
class UIB:
    """Universal inverted bottleneck.

    `[dw start] -> [1x1 expand] -> [dw mid] -> [SE] -> 1x1 project -> [dw end]`

    One record covers the V1 depthwise-separable block (`expand=0`,
    `project_activation=True`, `residual=False`), the first V2/V3 block
    (`expand=0`), the V2/V3 inverted residual (`mid=k`), and the V4 variants:
    ExtraDW (`start` and `mid`), IB (`mid`), ConvNeXt (`start`) and FFN
    (neither). `expand=0` means no expansion convolution at all.
    """

    filters: int
    expand: float = 1.0
    start: int = 0
    mid: int = 3
    end: int = 0
    strides: int = 1
    se: float = 0.0
    activation: str | None = None
    project_activation: bool = False
    residual: bool = True


@dataclasses.dataclass(frozen=True)
class FusedIB:
    """Fused inverted bottleneck: k x k expansion conv, 1x1 projection."""

    filters: int
    expand: float = 4.0
    kernel: int = 3
    strides: int = 1
    activation: str | None = None


@dataclasses.dataclass(frozen=True)
class MQA:
    """Mobile multi-query attention with optional key/value downsampling."""

    filters: int
    heads: int = 4
    key_dim: int = 64
    kv_strides: int = 1
    kernel: int = 3  # depthwise kernel of the key/value downsampling
    strides = 1  # not a field: attention blocks never change the resolution


Block = Conv | UIB | FusedIB | MQA


def repeat(count, block):
    """`count` copies of `block`; only the first keeps its stride."""
    rest = dataclasses.replace(block, strides=1)
    return (block,) + (rest,) * (count - 1)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One MobileNet architecture at width multiplier 1.

    Attributes:
        generation: 1 to 4; selects the reference classifier head.
        stem: filters of the 3x3 stride-2 stem convolution.
        stages: tuple of stages, each a tuple of blocks.
        activation: default activation of every block, the stem and head.
        final_conv: V2 only: the 1x1 convolution after the last stage
            (1280 filters), outside the pyramid.
        head_filters: V3/V4 only: the 1x1 layer applied after pooling.
        head_bias: whether that layer has a bias (V3) or not (V4).
        head_norm: whether that layer is followed by BatchNorm (V4).
        layer_scale: initial value of the per-channel residual scale
            (hybrid V4), or None.
        channel_rounding: `"divisible8"` (timm's `round_channels`) or
            `"truncate"` (keras.applications' `int(filters * alpha)`, V1).
        fix_stem_below: the stem is not scaled when the width multiplier is
            below this value (timm: V3 0.75, V4 1.0).
        se_activation / se_gate: activations inside squeeze-excite.
    """

    name: str
    generation: int
    stem: int
    stages: tuple[tuple[Block, ...], ...]
    activation: str
    final_conv: int | None = None
    head_filters: int | None = None
    head_bias: bool = True
    head_norm: bool = False
    layer_scale: float | None = None
    channel_rounding: str = "divisible8"
    fix_stem_below: float = 0.0
    se_activation: str = "relu"
    se_gate: str = "hard_sigmoid"


def make_divisible(value, divisor=8, round_limit=0.9):
    """Round `value` to a multiple of `divisor`, never losing over 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def scale_filters(filters, width_multiplier, rounding="divisible8"):
    """Channel count of a layer at `width_multiplier`, as the reference does."""
    if rounding == "truncate":
        return max(1, int(filters * width_multiplier))
    return make_divisible(filters * width_multiplier)


# --------------------------------------------------------------------------
# MobileNetV1 (Howard et al. 2017): depthwise-separable blocks, ReLU6.
_DS = dict(expand=0, mid=3, project_activation=True, residual=False)

MOBILENETV1 = Architecture(
    name="mobilenetv1",
    generation=1,
    stem=32,
    activation="relu6",
    channel_rounding="truncate",
    stages=(
        (UIB(64, **_DS),),
        repeat(2, UIB(128, strides=2, **_DS)),
        repeat(2, UIB(256, strides=2, **_DS)),
        repeat(6, UIB(512, strides=2, **_DS)),
        repeat(2, UIB(1024, strides=2, **_DS)),
    ),
)

# --------------------------------------------------------------------------
# MobileNetV2 (Sandler et al. 2018): inverted residuals, linear bottlenecks.
MOBILENETV2 = Architecture(
    name="mobilenetv2",
    generation=2,
    stem=32,
    activation="relu6",
    final_conv=1280,
    stages=(
        (UIB(16, expand=0),),
        repeat(2, UIB(24, 6, strides=2)),
        repeat(3, UIB(32, 6, strides=2)),
        repeat(4, UIB(64, 6, strides=2)),
        repeat(3, UIB(96, 6)),
        repeat(3, UIB(160, 6, strides=2)),
        (UIB(320, 6),),
    ),
)

# --------------------------------------------------------------------------
# MobileNetV3 (Howard et al. 2019): SE, hard-swish, the efficient head.
_RE = "relu"
MOBILENETV3_LARGE = Architecture(
    name="mobilenetv3_large",
    generation=3,
    stem=16,
    activation="hard_swish",
    head_filters=1280,
    fix_stem_below=0.75,
    stages=(
        (UIB(16, expand=0, activation=_RE),),
        (UIB(24, 4, strides=2, activation=_RE), UIB(24, 3, activation=_RE)),
        repeat(3, UIB(40, 3, mid=5, strides=2, se=0.25, activation=_RE)),
        (UIB(80, 6, strides=2), UIB(80, 2.5), *repeat(2, UIB(80, 2.3))),
        repeat(2, UIB(112, 6, se=0.25)),
        repeat(3, UIB(160, 6, mid=5, strides=2, se=0.25)),
        (Conv(960),),
    ),
)

# torchvision's `mobilenet_v3_large(reduced_tail=True)` (the paper's Table 6
# detection backbone): the last stage's outputs and the final conv halved, the
# classifier head too. The first stride-32 block still expands 112 -> 672; the
# later ones expand 80 -> 480, six times their (halved) input as before.
MOBILENETV3_LARGE_REDUCED_TAIL = dataclasses.replace(
    MOBILENETV3_LARGE,
    name="mobilenetv3_large_reduced_tail",
    head_filters=640,
    stages=(
        *MOBILENETV3_LARGE.stages[:5],
        repeat(3, UIB(80, 6, mid=5, strides=2, se=0.25)),
        (Conv(480),),
    ),
)

MOBILENETV3_SMALL = Architecture(
    name="mobilenetv3_small",
    generation=3,
    stem=16,
    activation="hard_swish",
    head_filters=1024,
    fix_stem_below=0.75,
    stages=(
        (UIB(16, expand=0, strides=2, se=0.25, activation=_RE),),
        (UIB(24, 4.5, strides=2, activation=_RE), UIB(24, 3.67, activation=_RE)),
        (UIB(40, 4, mid=5, strides=2, se=0.25), *repeat(2, UIB(40, 6, mid=5, se=0.25))),
        repeat(2, UIB(48, 3, mid=5, se=0.25)),
        repeat(3, UIB(96, 6, mid=5, strides=2, se=0.25)),
        (Conv(576),),
    ),
)

# "Minimalistic": 3x3 kernels, ReLU everywhere, no squeeze-excite.
MOBILENETV3_LARGE_MINIMAL = dataclasses.replace(
    MOBILENETV3_LARGE,
    name="mobilenetv3_large_minimal",
    activation="relu",
    stages=(
        (UIB(16, expand=0),),
        (UIB(24, 4, strides=2), UIB(24, 3)),
        repeat(3, UIB(40, 3, strides=2)),
        (UIB(80, 6, strides=2), UIB(80, 2.5), *repeat(2, UIB(80, 2.3))),
        repeat(2, UIB(112, 6)),
        repeat(3, UIB(160, 6, strides=2)),
        (Conv(960),),
    ),
)

MOBILENETV3_SMALL_MINIMAL = dataclasses.replace(
    MOBILENETV3_SMALL,
    name="mobilenetv3_small_minimal",
    activation="relu",
    stages=(
        (UIB(16, expand=0, strides=2),),
        (UIB(24, 4.5, strides=2), UIB(24, 3.67)),
        (UIB(40, 4, strides=2), *repeat(2, UIB(40, 6))),
        repeat(2, UIB(48, 3)),
        repeat(3, UIB(96, 6, strides=2)),
        (Conv(576),),
    ),
)


# --------------------------------------------------------------------------
# MobileNetV4 (Qin et al. 2024): universal inverted bottlenecks, Mobile MQA.
# UIB shorthand: ExtraDW has start and mid, IB mid only, ConvNeXt start only,
# FFN neither.
def _uib(filters, expand, start, mid, strides=1):
    return UIB(filters, expand, start=start, mid=mid, strides=strides)


_V4_HEAD = dict(head_filters=1280, head_bias=False, head_norm=True, fix_stem_below=1.0)

MOBILENETV4_CONV_SMALL = Architecture(
    name="mobilenetv4_conv_small",
    generation=4,
    stem=32,
    activation="relu",
    stages=(
        (Conv(32, 3, strides=2), Conv(32, 1)),
        (Conv(96, 3, strides=2), Conv(64, 1)),
        (_uib(96, 3, 5, 5, strides=2), *repeat(4, _uib(96, 2, 0, 3)), _uib(96, 4, 3, 0)),
        (
            _uib(128, 6, 3, 3, strides=2),
            _uib(128, 4, 5, 5),
            _uib(128, 4, 0, 5),
            _uib(128, 3, 0, 5),
            *repeat(2, _uib(128, 4, 0, 3)),
        ),
        (Conv(960),),
    ),
    **_V4_HEAD,
)

MOBILENETV4_CONV_MEDIUM = Architecture(
    name="mobilenetv4_conv_medium",
    generation=4,
    stem=32,
    activation="relu",
    stages=(
        (FusedIB(48, 4, strides=2),),
        (_uib(80, 4, 3, 5, strides=2), _uib(80, 2, 3, 3)),
        (
            _uib(160, 6, 3, 5, strides=2),
            *repeat(2, _uib(160, 4, 3, 3)),
            _uib(160, 4, 3, 5),
            _uib(160, 4, 3, 3),
            _uib(160, 4, 3, 0),
            _uib(160, 2, 0, 0),
            _uib(160, 4, 3, 0),
        ),
        (
            _uib(256, 6, 5, 5, strides=2),
            _uib(256, 4, 5, 5),
            *repeat(2, _uib(256, 4, 3, 5)),
            _uib(256, 4, 0, 0),
            _uib(256, 4, 3, 0),
            _uib(256, 2, 3, 5),
            _uib(256, 4, 5, 5),
            *repeat(2, _uib(256, 4, 0, 0)),
            _uib(256, 2, 5, 0),
        ),
        (Conv(960),),
    ),
    **_V4_HEAD,
)

MOBILENETV4_CONV_LARGE = Architecture(
    name="mobilenetv4_conv_large",
    generation=4,
    stem=24,
    activation="relu",
    stages=(
        (FusedIB(48, 4, strides=2),),
        (_uib(96, 4, 3, 5, strides=2), _uib(96, 4, 3, 3)),
        (
            _uib(192, 4, 3, 5, strides=2),
            *repeat(3, _uib(192, 4, 3, 3)),
            _uib(192, 4, 3, 5),
            *repeat(5, _uib(192, 4, 5, 3)),
            _uib(192, 4, 3, 0),
        ),
        (
            *repeat(4, _uib(512, 4, 5, 5, strides=2)),
            _uib(512, 4, 5, 0),
            _uib(512, 4, 5, 3),
            *repeat(2, _uib(512, 4, 5, 0)),
            _uib(512, 4, 5, 3),
            _uib(512, 4, 5, 5),
            *repeat(3, _uib(512, 4, 5, 0)),
        ),
        (Conv(960),),
    ),
    **_V4_HEAD,
)

_MQA_M = MQA(160, heads=4, key_dim=64, kv_strides=2)
_MQA_M16 = MQA(256, heads=4, key_dim=64)

MOBILENETV4_HYBRID_MEDIUM = Architecture(
    name="mobilenetv4_hybrid_medium",
    generation=4,
    stem=32,
    activation="relu",
    layer_scale=1e-5,
    stages=(
        (FusedIB(48, 4, strides=2),),
        (_uib(80, 4, 3, 5, strides=2), _uib(80, 2, 3, 3)),
        (
            _uib(160, 6, 3, 5, strides=2),
            _uib(160, 2, 0, 0),
            _uib(160, 4, 3, 3),
            _uib(160, 4, 3, 5),
            _MQA_M,
            _uib(160, 4, 3, 3),
            _MQA_M,
            _uib(160, 4, 3, 0),
            _MQA_M,
            _uib(160, 4, 3, 3),
            _MQA_M,
            _uib(160, 4, 3, 0),
        ),
        (
            _uib(256, 6, 5, 5, strides=2),
            _uib(256, 4, 5, 5),
            *repeat(2, _uib(256, 4, 3, 5)),
            _uib(256, 2, 0, 0),
            _uib(256, 2, 3, 5),
            _uib(256, 2, 0, 0),
            _uib(256, 4, 0, 0),
            _MQA_M16,
            _uib(256, 4, 3, 0),
            _MQA_M16,
            _uib(256, 4, 5, 5),
            _MQA_M16,
            _uib(256, 4, 5, 0),
            _MQA_M16,
            _uib(256, 4, 5, 0),
        ),
        (Conv(960),),
    ),
    **_V4_HEAD,
)

_MQA_L = MQA(192, heads=8, key_dim=48, kv_strides=2)
_MQA_L16 = MQA(512, heads=8, key_dim=64)

MOBILENETV4_HYBRID_LARGE = Architecture(
    name="mobilenetv4_hybrid_large",
    generation=4,
    stem=24,
    activation="gelu",
    layer_scale=1e-5,
    stages=(
        (FusedIB(48, 4, strides=2),),
        (_uib(96, 4, 3, 5, strides=2), _uib(96, 4, 3, 3)),
        (
            _uib(192, 4, 3, 5, strides=2),
            *repeat(3, _uib(192, 4, 3, 3)),
            _uib(192, 4, 3, 5),
            *repeat(2, _uib(192, 4, 5, 3)),
            _MQA_L,
            _uib(192, 4, 5, 3),
            _MQA_L,
            _uib(192, 4, 5, 3),
            _MQA_L,
            _uib(192, 4, 5, 3),
            _MQA_L,
            _uib(192, 4, 3, 0),
        ),
        (
            *repeat(4, _uib(512, 4, 5, 5, strides=2)),
            _uib(512, 4, 5, 0),
            _uib(512, 4, 5, 3),
            *repeat(2, _uib(512, 4, 5, 0)),
            _uib(512, 4, 5, 3),
            _uib(512, 4, 5, 5),
            _MQA_L16,
            _uib(512, 4, 5, 0),
            _MQA_L16,
            _uib(512, 4, 5, 0),
            _MQA_L16,
            _uib(512, 4, 5, 0),
            _MQA_L16,
            _uib(512, 4, 5, 0),
        ),
        (Conv(960),),
    ),
    **_V4_HEAD,
)

ARCHITECTURES = {
    arch.name: arch
    for arch in (
        MOBILENETV1,
        MOBILENETV2,
        MOBILENETV3_LARGE,
        MOBILENETV3_LARGE_REDUCED_TAIL,
        MOBILENETV3_SMALL,
        MOBILENETV3_LARGE_MINIMAL,
        MOBILENETV3_SMALL_MINIMAL,
        MOBILENETV4_CONV_SMALL,
        MOBILENETV4_CONV_MEDIUM,
        MOBILENETV4_CONV_LARGE,
        MOBILENETV4_HYBRID_MEDIUM,
        MOBILENETV4_HYBRID_LARGE,
    )
}


def get_architecture(name):
    if isinstance(name, Architecture):
        return name
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}. Valid names: {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name]
