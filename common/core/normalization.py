"""Normalisation layers with one meaning in every backend, and each framework's parameters for it.

Batch normalisation has PyTorch's meaning (``nn.BatchNorm2d`` defaults, which torchvision's ``_bn`` models
use): epsilon 1e-5; in training, normalise with the batch mean and the *biased* batch variance, and update
the running statistics with momentum 0.1, the weight of the new value, using the *unbiased* variance. Keras,
Flax and Gluon call the old value's weight momentum (0.9 here, not their 0.99/0.99/0.9 defaults), and all
three update the running variance with the biased one; :func:`unbiased_running_var` corrects their update.

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


@dataclass(frozen=True)
class BatchNorm:
    eps: float = 1e-5
    momentum: float = 0.1  # PyTorch's sense: the weight of the batch statistic in the running average

    @property
    def decay(self) -> float:
        """The old running value's weight: what Keras, Flax and Gluon call momentum."""
        return 1.0 - self.momentum


#: batch normalisation as torchvision's ``_bn`` models have it
TORCH_BN = BatchNorm()


def unbiased_running_var(after, before, count: int, decay: float = TORCH_BN.decay):
    """The running variance PyTorch would hold, from one updated with the biased batch variance v:
    ``after = decay * before + (1 - decay) * v``; PyTorch adds ``(1 - decay) * v / (count - 1)`` more, where
    ``count`` is the values per channel (batch x height x width). Works on any framework's arrays; exact up to
    float rounding of ``after - decay * before`` scaled by ``1 / (count - 1)``."""
    return after + (after - decay * before) / (count - 1)
