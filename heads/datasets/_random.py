"""Per-element random seeds for augmentation in `tf.data` pipelines."""

import tensorflow as tf


def with_seeds(dataset, seed):
    """`dataset` zipped with a `(2,)` int64 seed per element for stateless random ops.

    The same `seed` gives the same augmentations in a fresh pipeline, each
    epoch (each new iterator) draws new ones, and the global TensorFlow seed
    is left alone. `seed=None` draws nondeterministically.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip((dataset, seeds))


def split(seed, count):
    """`count` independent seeds from one element seed."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=count))
