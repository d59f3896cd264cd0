"""mfexp plugins: augmentation techniques and synthetic-data generators, instantiated by Hydra."""
