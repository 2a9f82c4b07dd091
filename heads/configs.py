"""What the heads' `get_config`s share: the constructor arguments a task or layer keeps, read back by name."""


def config_entries(obj, *names):
    """`{name: obj.name}` for constructor arguments that `obj` keeps under their own names; tuples as lists.

    A saved config (JSON) holds lists, so `get_config` gives lists too: the
    same config before saving as after. Nested tuples become nested lists.

    Example:
    ```python
    config_entries(segmenter, "num_classes", "image_size")  # {"num_classes": 4, "image_size": [64, 64]}
    ```
    """
    return {name: _as_saved(getattr(obj, name)) for name in names}


def _as_saved(value):
    return [_as_saved(item) for item in value] if isinstance(value, tuple) else value
