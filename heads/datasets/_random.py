"""Per-element random seeds for augmentation in `tf.data` pipelines.

Private module: `with_seeds` and `split_seed` are public as
`heads.datasets.with_seeds` and `heads.datasets.split_seed`.
"""

import tensorflow as tf


def with_seeds(dataset, seed):
    """`dataset` zipped with a `(2,)` int64 seed per element for stateless random ops.

    Each element becomes `(element, seed)`: hand the seed to TensorFlow's
    `tf.random.stateless_*` and `tf.image.stateless_random_*` ops (split it
    with `split_seed` for several of them). The same `seed` gives the same
    augmentations in a fresh pipeline, each epoch (each new iterator) draws
    new ones, and the global TensorFlow seed is left alone. `seed=None`
    draws nondeterministically. The loaders' `augment` and
    `mnet-backbones train` draw their augmentation so.

    Example:
    ```python
    import tensorflow as tf
    import heads

    def augment(image, seed):
        flip_seed, noise_seed = heads.datasets.split_seed(seed, 2)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return image + tf.random.stateless_normal(tf.shape(image), noise_seed)

    images = tf.data.Dataset.from_tensor_slices(tf.zeros((4, 8, 8, 3)))
    augmented = heads.datasets.with_seeds(images, seed=0).map(augment)
    ```
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip((dataset, seeds))


def split_seed(seed, count):
    """`count` independent `(2,)` seeds from one stateless seed (a list of tensors).

    For an element that needs several random draws (a flip and a crop,
    say), each its own seed: the same `seed` and `count` give the same
    seeds (`tf.random.experimental.stateless_split`).

    Example:
    ```python
    import tensorflow as tf
    import heads

    flip_seed, crop_seed = heads.datasets.split_seed(tf.constant([1, 2], "int64"), 2)
    ```
    """
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=count))
