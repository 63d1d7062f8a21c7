"""Fashion-MNIST as every backend reads it: IDX files, the verified download, batches and the loader.

``load`` and ``from_arrays`` are the loader's (common.data.loader), here too because release 0.1's
``common.data`` was that module."""

from common.data.loader import from_arrays, load

__all__ = ["from_arrays", "load"]
