"""The engine, above the protocols: the evaluation context a protocol receives (context), the job specs that
travel to workers (spec), and the one plan -> resume -> execute -> write loop that builds every row (engine)."""
