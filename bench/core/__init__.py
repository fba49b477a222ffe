"""The ground floor, below every protocol, plugin and the engine: typed values (types), the cache, results
and their provenance, errors, the generic plugin registry, the metric vocabulary, protocol declarations and
the cached forward-pass service. Nothing here imports a protocol, a plugin or the engine."""
