"""Multiply-accumulates of a Keras model, counted from its TensorFlow graph.

The count is the one the MobileNet papers and timm's model cards quote: every
convolution (regular, depthwise, 1x1, the squeeze-excite and classifier ones),
every dense layer and every matrix product of attention, one MAC per
multiply-add. Activations, BatchNorm, pooling and additions are not counted.

Counting from the traced graph rather than from layer configurations makes it
model-agnostic: the heads, a keras.applications model or any functional model
are counted the same way, and nothing has to be kept in sync with the layers.
"""

import math

import keras

MATMUL_TRANSPOSE_ATTRS = {"MatMul": "transpose_a", "BatchMatMulV2": "adj_x", "BatchMatMulV3": "adj_x"}


def _static_shape(tensor, op):
    shape = tensor.shape.as_list()
    if any(size is None for size in shape):
        raise ValueError(
            f"Cannot count the MACs of {op.type} op {op.name!r}: its shape {shape} is not "
            "fully known. Give `image_shape` with a known height and width."
        )
    return shape


def _einsum_macs(op):
    """MACs of a two-operand einsum: the product of the sizes of all its indices."""
    equation = op.get_attr("equation").decode()
    operands = equation.split("->")[0].split(",")
    if len(operands) != 2 or "." in equation:
        raise ValueError(f"Cannot count the MACs of einsum {equation!r} in op {op.name!r}.")
    sizes = {}
    for operand, tensor in zip(operands, op.inputs):
        sizes.update(zip(operand, _static_shape(tensor, op)))
    return math.prod(sizes.values())


def _convolution_output_size(op):
    """Output elements of a convolution, as the model sees them.

    TensorFlow runs a dilated convolution on a space-to-batch rearranged,
    padded input and rearranges back: the true output is the BatchToSpaceND's.
    """
    for consumer in op.outputs[0].consumers():
        if consumer.type == "BatchToSpaceND":
            return math.prod(_static_shape(consumer.outputs[0], consumer))
    return math.prod(_static_shape(op.outputs[0], op))


def op_macs(op):
    """The multiply-accumulates of one TensorFlow graph operation (0 for most)."""
    if op.type == "Conv2D":
        kernel_height, kernel_width, in_channels, _ = _static_shape(op.inputs[1], op)
        return _convolution_output_size(op) * kernel_height * kernel_width * in_channels
    if op.type == "DepthwiseConv2dNative":
        # Each output channel sees one input channel: no sum over channels.
        kernel_height, kernel_width, _, _ = _static_shape(op.inputs[1], op)
        return _convolution_output_size(op) * kernel_height * kernel_width
    if op.type in MATMUL_TRANSPOSE_ATTRS:
        left = _static_shape(op.inputs[0], op)
        inner = left[-2] if op.get_attr(MATMUL_TRANSPOSE_ATTRS[op.type]) else left[-1]
        return math.prod(_static_shape(op.outputs[0], op)) * inner
    if op.type == "Einsum":
        return _einsum_macs(op)
    return 0


def count_macs(model, image_shape=None, batch_size=1):
    """Count a model's multiply-accumulates for one forward pass.

    Args:
        model: a Keras model taking one image batch, built on the TensorFlow
            backend (the count reads the TensorFlow graph of `model(images)`).
        image_shape: `(height, width, channels)` of the input; defaults to the
            model's input shape, which must then be fully known.
        batch_size: images per forward pass; the count scales linearly.

    Returns:
        The number of multiply-accumulates, an int.

    Example:

    ```python
    classifier = mnet_backbones.MobileNetImageClassifier.from_preset(
        "mobilenetv4_conv_small", load_weights=False
    )
    count_macs(classifier, (224, 224, 3)) / 1e6  # 186.0, as timm reports
    ```
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "count_macs reads the model's TensorFlow graph; it needs KERAS_BACKEND=tensorflow, "
            f"the current backend is {keras.backend.backend()!r}. MACs depend only on the "
            "architecture, so count a model rebuilt from the same preset or config there."
        )
    import tensorflow as tf

    if image_shape is None:
        image_shape = tuple(model.input_shape[1:])
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or not all(isinstance(size, int) and size > 0 for size in image_shape):
        raise ValueError(f"`image_shape` must be (height, width, channels) of positive ints, got {image_shape!r}.")
    spec = tf.TensorSpec((batch_size, *image_shape), model.inputs[0].dtype if model.inputs else "float32")
    graph = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec).graph
    return sum(op_macs(op) for op in graph.get_operations())
