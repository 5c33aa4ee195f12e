"""JAX/Flax models served by kinfer; never imports Kafka libraries.

Start at `models.registry.load(name)`, which returns a `models.runner.ModelRunner`. Importing
this package is cheap: JAX loads only with `models.runner` or a model folder.
"""
