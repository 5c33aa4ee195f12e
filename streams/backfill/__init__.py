"""Backfills: a file (JSONL, CSV, Parquet) or a topic range through the model, resumable.

``kinfer backfill`` (`streams.backfill.command`) reads rows from a source (``sources.py``,
``topic_source.py``), runs them through the SDK's ``InferenceClient.map`` (``run.py``) and
writes outputs and error rows in input order (``sinks.py``), checkpointing ``OUT.state.json``
(``state.py``) so that an interrupted run resumes with no row lost or doubled.
"""
