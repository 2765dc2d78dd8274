"""Training: data, the trainer loop, checkpoints and metrics."""
