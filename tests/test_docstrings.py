"""The examples in the public docstrings run as written."""

import re
import textwrap

import pytest

import mnet_backbones
from mnet_backbones import predecessor_api

DOCUMENTED = [
    mnet_backbones.MobileNetBackbone,
    mnet_backbones.MobileNetImageClassifier,
    predecessor_api.MobileNetV1,
    predecessor_api.MobileNetV2,
    predecessor_api.MobileNetV3,
    predecessor_api.MobileNetV4,
]


def examples(obj):
    blocks = re.findall(r"```python\n(.*?)```", obj.__doc__ or "", flags=re.S)
    return [textwrap.dedent(block) for block in blocks]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda obj: obj.__name__)
def test_docstring_examples_run(obj):
    blocks = examples(obj)
    assert blocks, f"{obj.__name__} has no example"
    for block in blocks:
        namespace = {}
        exec(compile(block, f"<{obj.__name__} docstring>", "exec"), namespace)
