"""Normalisation layers with one meaning in every backend, and each framework's parameters for it.

Local response normalisation (A-LRN in Table 1) is AlexNet's, which the VGG paper follows:
``b_c = a_c / (k + alpha * sum_{c' within size/2 of c} a_c'^2) ** beta`` with a window of 5 channels, k 2,
alpha 1e-4 multiplying the plain sum of squares, and beta 0.75. The frameworks spell it differently:
PyTorch's ``LocalResponseNorm`` and MXNet's ``LRN`` divide alpha by the window size (Caffe's convention), so
they get alpha x size; TensorFlow's ``local_response_normalization`` takes a radius, (size - 1) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LRN:
    size: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75

    @property
    def radius(self) -> int:
        """Channels on each side of the centre (TensorFlow's ``depth_radius``)."""
        return (self.size - 1) // 2

    @property
    def alpha_per_size(self) -> float:
        """Alpha for frameworks that divide it by the window size (PyTorch, MXNet)."""
        return self.alpha * self.size


#: the paper's (and AlexNet's) local response normalisation
PAPER_LRN = LRN()
