"""Training: Darknet's training step (losses of the heads, optimizer and schedule) and its training loop
(data pipeline, augmentation, checkpoints). Filled in by the training issues."""
