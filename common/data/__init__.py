"""Fashion-MNIST as every backend reads it: IDX files, the verified download, batches and the loader."""
