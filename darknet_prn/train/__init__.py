"""Training: Darknet's training step (losses of the heads, optimizer and schedule) and its training loop
(data pipeline, augmentation, checkpoints).

``Darknet.loss(x, truth)`` (training mode) returns a loss whose gradients are Darknet's deltas and parameter
updates (cuDNN semantics); :class:`DarknetOptimizer` is Darknet's ``update_network`` with ``get_current_rate``.
"""
from .optim import DarknetOptimizer, Schedule, get_current_rate
from .truth import classifier_truth, detection_truth

__all__ = ["DarknetOptimizer", "Schedule", "get_current_rate", "classifier_truth", "detection_truth"]
