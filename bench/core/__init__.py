"""The engine's core: typed values (types), the evaluation context protocols receive (context),
and the one plan -> resume -> execute -> write loop (engine)."""
