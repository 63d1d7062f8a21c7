"""What drives the backends: the ``vgg`` CLI, compare, parity (in process, distributed, ONNX), the launcher,
predict and model opening. Nothing below this layer imports it."""
