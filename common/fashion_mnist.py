"""Fashion-MNIST files: lookup, verification and download (work in progress)."""
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
