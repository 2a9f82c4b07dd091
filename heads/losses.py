"""Losses normalised by a count over the global batch, on one device or many.

A detector's loss is divided by the number of positive anchors, a
segmenter's by the number of labelled pixels. Under data parallelism the
count must be the global batch's, not each device's share:

- JAX (`keras.distribution.DataParallel`): the train step is one program
  over the global batch, so a sum over the batch is already global.
- TensorFlow (`tf.distribute` strategies): each replica runs the step on
  its share and the strategy sums the gradients, so each replica must return
  its own sum divided by the global count. `sum_over_replicas` all-reduces
  the count; the losses' "sum" reduction is not rescaled by Keras, so the
  summed gradients are those of one device on the whole batch, and the
  logged loss (Keras multiplies each replica's by the number of replicas,
  then averages) is the whole batch's too.
- PyTorch: one device.
"""

import keras
from keras import ops

from heads.configs import config_entries

# The label of pixels that do not count (VOC's object borders); heads.datasets reads masks with the same.
IGNORE_LABEL = 255


def sum_over_replicas(value):
    """`value` summed over the replicas of a `tf.distribute` strategy; itself otherwise.

    Call it inside the train or test step (a replica context) on a count such
    as a batch's positive anchors. On JAX, PyTorch, with one replica, or
    outside a step it returns `value` unchanged. The count carries no
    gradient.

    Example:
    ```python
    count = sum_over_replicas(ops.sum(ops.cast(labels >= 0, "float32")))
    ```
    """
    if keras.backend.backend() != "tensorflow":
        return value
    # The one bridge to tf.distribute in model code: Keras has no public
    # cross-replica sum (it scales "sum_over_batch_size" losses itself).
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, ops.stop_gradient(value))


@keras.saving.register_keras_serializable(package="heads")
class MaskedSparseCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy over the labelled pixels of the whole batch.

    Per-pixel `sparse_categorical_crossentropy` of the logits, summed over
    the pixels whose label is not `ignore_class` and divided by their number
    in the global batch (`sum_over_replicas`), so that 2 devices take the
    step of one. On one device it equals
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True,
    ignore_class=255)`, whose per-replica mean is not the global one when the
    replicas hold different numbers of labelled pixels.

    Args:
        ignore_class: the label of pixels that do not count (255, as VOC's
            borders).
        from_logits: whether `y_pred` are logits (True) or probabilities.

    Example:
    ```python
    loss = MaskedSparseCrossentropy()
    labels = np.array([[[0, 255]]])
    logits = np.zeros((1, 1, 2, 3), "float32")
    float(loss(labels, logits))  # log(3) = 1.0986
    ```
    """

    def __init__(self, ignore_class=IGNORE_LABEL, from_logits=True, name="masked_sparse_crossentropy", **kwargs):
        kwargs.setdefault("reduction", "sum")
        if kwargs["reduction"] != "sum":
            raise ValueError(
                f"MaskedSparseCrossentropy normalises by the labelled pixels itself: reduction must be 'sum', "
                f"got {kwargs['reduction']!r}."
            )
        super().__init__(name=name, **kwargs)
        if ignore_class is not None and (isinstance(ignore_class, bool) or not isinstance(ignore_class, int)):
            raise TypeError(f"ignore_class must be an int or None, got {ignore_class!r}.")
        self.ignore_class = ignore_class
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):
            labels = ops.squeeze(labels, axis=-1)
        if self.ignore_class is None:
            valid = ops.ones_like(labels, dtype="float32")
        else:
            valid = ops.cast(ops.not_equal(labels, self.ignore_class), "float32")
        safe = ops.where(valid > 0, labels, 0)
        per_pixel = keras.losses.sparse_categorical_crossentropy(safe, y_pred, from_logits=self.from_logits)
        count = ops.maximum(sum_over_replicas(ops.sum(valid)), 1.0)
        return ops.cast(per_pixel, "float32") * valid / count

    def get_config(self):
        return {**super().get_config(), **config_entries(self, "ignore_class", "from_logits")}
