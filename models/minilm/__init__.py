"""all-MiniLM-L6-v2: the `models.bert` encoder loaded from its weights package's folder.

`servable.build()` loads it; `config`, `model`, `weights` and `preprocess` keep MiniLM's names
for the generic pieces (`MiniLMConfig`, `MiniLM`, `load_weights`, `MiniLMTokenizer`).
"""
