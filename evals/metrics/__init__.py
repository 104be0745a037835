"""Metrics: functional cores plus thin torchmetrics-style classes whose names state their variant."""
