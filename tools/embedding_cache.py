"""Embeddings cached per model file, so evaluating the same checkpoint again is instant.

The cache sits next to the model file, ``<model>.emb-<digest>.npz``; the digest covers
the model file (absolute path, size, modification time), the test folder, the
extraction protocol (eval_frames, num_eval, max_eval_seconds, eval_long_files, autocast) and the
files asked for. Any change makes a new entry; stale ones can simply be deleted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Callable, Dict, List

from tools.evaluation import Embeddings, load_embeddings, save_embeddings

logger = logging.getLogger(__name__)

PROTOCOL_KEYS = ("eval_frames", "num_eval", "max_eval_seconds", "eval_long_files", "eval_autocast")


def cache_path(model_path: str, test_path: str, keys: List[str], config: Dict[str, Any]) -> str:
    """Where the embeddings of ``keys`` under ``test_path`` by ``model_path`` are cached."""
    stat = os.stat(model_path)
    what = {"model": os.path.abspath(model_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "test_path": os.path.abspath(test_path), "keys": keys,
            **{k: config.get(k) for k in PROTOCOL_KEYS}}
    digest = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return f"{model_path}.emb-{digest}.npz"


def cached_embeddings(model_path: str, test_path: str, keys: List[str], config: Dict[str, Any],
                      extract: Callable[[], Embeddings]) -> Embeddings:
    """Load the cached embeddings, or ``extract()`` them and write the cache (atomically)."""
    path = cache_path(model_path, test_path, keys, config)
    if os.path.isfile(path):
        logger.info("Embeddings of %d files read from the cache %s", len(keys), path)
        return load_embeddings(path)
    emb = extract()
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        save_embeddings(emb, tmp)
        os.replace(tmp, path)
        logger.info("Embeddings cached in %s", path)
    except OSError as err:  # a read-only model folder must not stop the evaluation
        logger.warning("Could not write the embedding cache %s (%s); continuing without it.", path, err)
        if os.path.exists(tmp):
            os.remove(tmp)
    return emb
