"""`check_classes`: a dataset's labels against a model's classes, through any `tf.data` transformation.

Private module: `check_classes` is public as `heads.datasets.check_classes`.
"""

from heads.datasets.segmentation import read_mask
from mnet_backbones.validation import check_positive_int


def _upstream(dataset):
    """`dataset` and every dataset it was made from (`take`, `map`, `zip`, ...), each once."""
    seen, pending = set(), [dataset]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inputs = getattr(current, "_inputs", None)
        pending.extend(inputs() if callable(inputs) else [])


def check_classes(dataset, num_classes):
    """Refuses labels a model with `num_classes` classes cannot learn, naming their file.

    Finds the `load_coco` and `load_segmentation` datasets that `dataset`
    was made from, however transformed since (`take`, `map`, `shuffle`,
    `repeat`, `batch`, `zip`, ...), and raises a ValueError naming the file:
    a COCO file with more categories than `num_classes` (their labels would
    train as "no object"), or a mask holding a value `>= num_classes` other
    than 255 (ignore), with the values and the range allowed. Masks are read
    once per dataset for a given bound (not at all if the dataset was built
    with `num_classes` at least as strict). Other datasets pass unchecked.

    Example:
    ```python
    import heads

    files = heads.datasets.make_shapes("shapes", num_images=4, image_size=32)
    dataset = heads.datasets.load_segmentation(files["images"], files["masks"], 32, batch_size=2)
    heads.datasets.check_classes(dataset.shuffle(2).repeat(), num_classes=4)  # shapes' masks: 0..3
    ```
    """
    num_classes = check_positive_int("num_classes", num_classes)
    for source in _upstream(dataset):
        categories = getattr(source, "coco_categories", None)
        if categories is not None and len(categories) > num_classes:
            raise ValueError(
                f"{getattr(source, 'coco_file', 'The COCO file')} has {len(categories)} categories "
                f"{categories[:10]}, but the model has num_classes={num_classes}: labels {num_classes}.. would "
                f"train as no object. Build the model with num_classes={len(categories)}, or pass "
                f"num_classes={num_classes} to load_coco to be told which annotations are beyond it."
            )
        mask_files = getattr(source, "mask_files", None)
        checked_below = getattr(source, "masks_checked_below", None)
        if mask_files is not None and (checked_below is None or num_classes < checked_below):
            for path in mask_files:
                read_mask(path, num_classes)
            source.masks_checked_below = num_classes
