"""Dataset directory: the contract (paths, validation) and the built-in synthetic dataset."""
