"""Training recipes for the paper setups (run on a GPU machine; the suites name their checkpoints)."""
