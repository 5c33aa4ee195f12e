"""A small Flax NNX CNN over scikit-learn's 8x8 handwritten digits.

`classifier.DigitsClassifier` serves the committed weights (``weights/model.safetensors``);
`inputs.validate_images` turns a request's inputs into its (n, 8, 8) input; `train` rebuilds the
weights and ``weights/metrics.json`` deterministically (``python -m models.digits.train``).
"""
