"""The applications on top of the models: command line, export, benchmark, demos.

The third floor of the project: `mnet_backbones` (the core models) <- `heads`
(tasks on any feature pyramid) <- `mnet_tools`. Nothing below imports from here.

Modules:
- `cli`: the `mnet-backbones` command line (also `python -m mnet_tools`);
- `export`: a model to a LiteRT or ONNX file (float32 or int8), and its
  agreement with Keras (`compare`);
- `litert`: the one place a LiteRT interpreter is made: running a file,
  XNNPACK coverage, the full-integer check, peak memory;
- `detection_export`: an SSDLite detector as LiteRT raw outputs, and the
  numpy post-processing (decode, NMS) that turns them into detections;
- `bench`: latency, MACs and memory of the presets beside keras.applications;
- `macs`: `count_macs`, multiply-accumulates read from the TensorFlow graph;
- `tables`: markdown tables for the command line and the benchmark;
- `plotting`: matplotlib on demand;
- `demos.detection`, `demos.segmentation`: train a head on synthetic shapes.
"""
