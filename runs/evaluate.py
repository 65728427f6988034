"""Evaluate a model given by the configuration (``initial_model`` on ``pretrained_model_path``), or saved
embeddings; embed files with it (for cohorts and verification)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from core.device import resolve_device
from core.logs import setup_logging
from evaluation.embeddings import Embeddings
from evaluation.pipeline import evaluate, extract_files
from SpeakerNet import build_encoder


def evaluate_model(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The evaluation of ``config``; the model is built only when embeddings must be extracted."""
    setup_logging()
    device = resolve_device(config["device"])
    return evaluate(config, device, build_encoder=lambda: build_encoder(config, device))


def embed_files(config: Dict[str, Any], files: List[str], root: str, verbose: bool = True) -> Embeddings:
    """Embeddings of ``files`` (relative to ``root``) by the model of ``config``, with its extraction options."""
    device = resolve_device(config["device"])
    return extract_files(config, files, root, build_encoder(config, device), device, verbose=verbose)
