"""Evaluation: trials, embeddings and their files, extraction, scoring, calibration, metrics, reports.

``evaluation.pipeline.evaluate`` runs the steps; each step is a module of its own and is tested alone.
Imports only ``core`` of the project: the model is passed in by the caller.
"""
