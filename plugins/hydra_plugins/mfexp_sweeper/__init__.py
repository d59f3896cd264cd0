"""The policy-search sweeper (``hydra/sweeper=mfexp``): Hydra side, search backends, and the sweep's MLflow run."""
