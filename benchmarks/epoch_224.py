"""One full epoch of real Fashion-MNIST at 224x224 through a backend's loader: python benchmarks/epoch_224.py torch"""
import time, resource, sys
from common import backends
vgg = backends.load(sys.argv[1])
data = vgg.load_fashion_mnist(128, resize=224, data_dir=sys.argv[2] if len(sys.argv) > 2 else None)
t = time.perf_counter(); n = 0
for images, labels in data.train:
    n += int(labels.shape[0])
print(f"{sys.argv[1]}: one epoch of {n} images at 224x224 as {type(images).__module__}.{type(images).__name__} {tuple(images.shape)} in {time.perf_counter()-t:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB")
