"""Pretraining: the loop on Accelerate, its configuration, checkpoints and host memory."""
