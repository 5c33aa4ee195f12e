"""Enrichment of the user's own event topics: each event, with its prediction added, on a sink.

`route` declares a route (``kinfer enrich`` or ``KINFER_ENRICH_ROUTES``); `record` reads an
event and builds the enriched record; `pipeline` runs one route's events through the model's
batcher and publishes them; `agents` and `topics` wire the routes into the worker. Importing
this package imports none of them.
"""
