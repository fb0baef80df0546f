"""Configuration, training loop, checkpoints."""
