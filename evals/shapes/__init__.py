"""The "shapes" world: a procedural scene generator with captions, and its exact scene parser (the oracle)."""
