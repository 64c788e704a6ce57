"""Training: the loop, curriculum, checkpoints, W&B tracking and data parallelism."""
