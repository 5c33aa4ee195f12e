"""all-MiniLM-L6-v2 (sentence-transformers) as a Flax NNX module; `servable.build()` loads it."""
