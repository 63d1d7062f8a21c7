"""What the network is, framework-neutral: archs, the model config, layouts, shapes and FLOPs, the canonical
weight layout, the NumPy oracle, tolerances and the backend registry. Imports nothing above it."""
