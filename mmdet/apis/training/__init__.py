"""The parts of the training loop: settings, loaders, optimizer, one epoch, log, checkpoints and evaluation."""
