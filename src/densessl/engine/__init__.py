"""The training engine: the only code that knows devices, DDP, AMP, optimizers and checkpoints."""
