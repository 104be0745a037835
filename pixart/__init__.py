"""The model side of the suite: checkpoints, text-embedding cache, sampling engine, generation CLI."""
