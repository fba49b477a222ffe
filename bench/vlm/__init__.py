"""MMBench through VLMEvalKit with NE in the authorized vision tower's patch-embedding space."""
