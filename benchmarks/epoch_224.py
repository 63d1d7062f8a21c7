"""One full epoch of real Fashion-MNIST at 224x224 through a backend's loader, with its time and peak memory.

    python benchmarks/epoch_224.py torch [DATA_DIR]
"""

import sys
import time

from common.runtime.machine import peak_rss_mb
from common.tools import loading

vgg = loading.backend(sys.argv[1])
data = vgg.load_fashion_mnist(128, resize=224, data_dir=sys.argv[2] if len(sys.argv) > 2 else None)
began, n = time.perf_counter(), 0
for images, labels in data.train:
    n += int(labels.shape[0])
kind = f"{type(images).__module__}.{type(images).__name__}"
print(f"{sys.argv[1]}: one epoch of {n} images at 224x224 as {kind} {tuple(images.shape)} in "
      f"{time.perf_counter() - began:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
