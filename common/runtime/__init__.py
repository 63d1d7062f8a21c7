"""What runs a backend's model: the training loop and its Engine protocol, history, checkpoints, the
distributed World with the launcher-worker environment, batched inference and the backend contract."""
