"""Evaluation: trials, embeddings and their files, extraction, scoring, calibration, metrics, reports.

``evaluation.pipeline.evaluate`` runs the steps; each step is a module of its own and is tested alone.
Imports ``core`` and ``dataprep`` (the lists' keys to paths and the data check) of the project, nothing
above: the model is passed in by the caller.
"""
