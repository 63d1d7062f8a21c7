"""Serving what was trained: export formats and their metadata, ONNX files and ONNX Runtime, image files,
and prediction from any model file. Framework-neutral; each backend's ``export`` module does the writing."""
