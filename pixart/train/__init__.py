"""Training: offline features, IDDPM loss, the model variants, DiT re-parameterisation and the training loop."""
