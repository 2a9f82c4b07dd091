"""The LiteRT runtime: the one place an interpreter is made and a `.tflite` file is run.

Thread policy: every interpreter runs on `THREADS` (2) threads, the export
checks, the tests and the benchmark alike. Two is what the benchmark's figures
were measured with, what this project's CI machine has, and about what a
phone app gives LiteRT on its big cores; a model's outputs do not depend on it.
XNNPACK, LiteRT's default CPU delegate, takes the graph when the tensors are
allocated.

`ai_edge_litert` is imported on demand (`pip install ai-edge-litert`), so
that the command line and the export module load without it.

Example:
```python
from mnet_tools import litert

(logits,) = litert.run("small.tflite", images)  # images: (N, H, W, 3) float32 model inputs
litert.xnnpack_coverage("small.tflite")        # {"partitions": 1, "outside": {}}
```
"""

import collections
import os
import subprocess
import sys

import numpy as np

THREADS = 2


def interpreter(path):
    """A LiteRT `Interpreter` of the file at `path`, on `THREADS` threads (tensors not yet allocated)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=os.fspath(path), num_threads=THREADS)


def run(path, inputs):
    """Run the `.tflite` file on `inputs`; returns its outputs as a list of arrays, in output-name order.

    A file with a free batch axis takes all `inputs` at once; one with a fixed
    batch runs them in chunks of that batch (their count must be a multiple).
    """
    inputs = np.asarray(inputs, "float32")
    runtime = interpreter(path)
    (details,) = runtime.get_input_details()
    fixed_batch = int(details["shape_signature"][0])
    if fixed_batch > 0 and fixed_batch != len(inputs):
        if len(inputs) % fixed_batch:
            raise ValueError(f"{os.fspath(path)} takes batches of {fixed_batch}; got {len(inputs)} inputs.")
        chunks = [_invoke(runtime, inputs[i : i + fixed_batch]) for i in range(0, len(inputs), fixed_batch)]
        return [np.concatenate(parts) for parts in zip(*chunks)]
    return _invoke(runtime, inputs)


def _invoke(runtime, inputs):
    (details,) = runtime.get_input_details()
    runtime.resize_tensor_input(details["index"], inputs.shape)
    runtime.allocate_tensors()
    runtime.set_tensor(details["index"], inputs)
    runtime.invoke()
    outputs = sorted(runtime.get_output_details(), key=lambda detail: detail["name"])
    return [runtime.get_tensor(detail["index"]) for detail in outputs]


def runner(path, seed=0):
    """A callable that runs the file once on fixed random inputs in [0, 1]: for timing.

    The input has the file's own shape (batch 1 for a free batch axis);
    an integer input is quantised with the file's scale and zero point.
    """
    runtime = interpreter(path)
    runtime.allocate_tensors()
    (given,) = runtime.get_input_details()
    dtype = given["dtype"]
    images = np.random.default_rng(seed).uniform(0, 1, given["shape"]).astype(np.float32)
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = given["quantization"]
        images = np.clip(np.round(images / scale + zero_point), np.iinfo(dtype).min, np.iinfo(dtype).max)
    runtime.set_tensor(given["index"], images.astype(dtype))
    return runtime.invoke


def xnnpack_coverage(path):
    """How XNNPACK, LiteRT's default CPU delegate, takes the file's operators.

    Returns `{"partitions": n, "outside": {op_name: count}}`: `n` XNNPACK
    subgraphs, and the operators it left to LiteRT's builtin kernels, which
    split the graph. One partition and nothing outside means XNNPACK runs the
    whole network.
    """
    runtime = interpreter(path)
    runtime.allocate_tensors()  # the delegate takes its partitions here
    ops = runtime._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    original = {op["index"]: op for op in ops if op["op_name"] != "DELEGATE"}
    producer = {int(t): index for index, op in original.items() for t in op["outputs"]}
    # Each XNNPACK node covers the operators between its inputs and its
    # outputs: walk back from its outputs and stop at its inputs.
    covered = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            index = producer.get(stack.pop())
            if index is None or index in covered:
                continue
            covered.add(index)
            stack.extend(int(t) for t in original[index]["inputs"] if t >= 0 and int(t) not in boundary)
    outside = collections.Counter(op["op_name"] for index, op in sorted(original.items()) if index not in covered)
    return {"partitions": len(delegates), "outside": dict(outside)}


def is_full_integer(path):
    """True when every tensor the file computes with, but its float input and outputs, is integer."""
    runtime = interpreter(path)  # not allocated: the operators as written, before any delegate
    edges = {d["index"] for d in runtime.get_input_details() + runtime.get_output_details()}
    float_ops = [
        op["op_name"]
        for op in runtime._get_ops_details()
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
        and any(
            runtime._get_tensor_details(i, 0)["dtype"] == np.float32
            for i in list(op["inputs"]) + list(op["outputs"])
            if i >= 0 and i not in edges
        )
    ]
    return not float_ops


# Run in a fresh process, so that the peak is this file's alone. "-" loads nothing:
# the baseline of a process that imports the interpreter.
PEAK_MEMORY_PROGRAM = """
import resource, sys
from mnet_tools.litert import interpreter
if sys.argv[1] != "-":
    runtime = interpreter(sys.argv[1])
    runtime.allocate_tensors()
    for _ in range(3):
        runtime.invoke()
try:  # Linux: this address space's peak (ru_maxrss would include the parent's, from before exec)
    with open("/proc/self/status") as status:
        print([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _max_rss_kib(path):
    # The child imports this module as it is here, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", PEAK_MEMORY_PROGRAM, os.fspath(path)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return int(output.split()[-1])


def peak_memory_mib(path):
    """Peak resident memory (MiB) of loading and running the file, over a bare interpreter process."""
    return (_max_rss_kib(path) - _max_rss_kib("-")) / 1024
