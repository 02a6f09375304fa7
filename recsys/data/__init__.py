"""Dataset directory: reading, validation, splits, behaviour sequences, the built-in synthetic dataset."""
