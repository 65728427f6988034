"""Embeddings cached per model file, so evaluating the same checkpoint again is instant.

The cache lives in the run's own folder, ``<save_path>/embedding_cache/`` (or the folder
``embedding_cache_dir``), never next to the model file, which may be a colleague's or on a
read-only mount. An entry is ``<model file name>.emb-<digest>.npz``; the digest covers the
model file (absolute path, size, modification time), the test folder, the files asked for
and every option that can change an embedding: the options of role ``cache``, declared per
option in :data:`core.options.ROLES` (front-end, model and extraction options). It is derived
from the option table, so no option can be forgotten. Any change makes a new entry; stale ones
can simply be deleted.

Data-parallel extraction (``--distributed``; :func:`evaluation.pipeline.shared_embeddings`) keeps the same entries:
when every process sees the entry of all the files (the one a single process writes and reads), nothing is
extracted; otherwise each process caches its own share of the files under the share's own key (so an interrupted
run resumes per process), and rank 0, having gathered the shares, writes the entry of all the files, which a
later run of one process, or of any number, reads. Once that entry is written, each process removes its share's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Callable, Dict, List

from core.errors import OutputError
from core.logs import EVERY_RANK
from core.options import CACHE, with_role
from evaluation.embeddings import Embeddings, load_embeddings, save_embeddings

logger = logging.getLogger(__name__)

CACHE_FOLDER = "embedding_cache"  # inside save_path, unless embedding_cache_dir is set


def cache_key(model_path: str, test_path: str, keys: List[str], config: Dict[str, Any]) -> Dict[str, Any]:
    """Everything the embeddings of ``keys`` depend on (the digest is made of this). The options sit apart
    from the file's fields (the option ``model`` would otherwise replace the model file's path)."""
    stat = os.stat(model_path)
    return {"model": os.path.abspath(model_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "test_path": os.path.abspath(test_path), "keys": keys,
            "options": {name: config[name] for name in with_role(CACHE)}}


def cache_path(model_path: str, test_path: str, keys: List[str], config: Dict[str, Any]) -> str:
    """Where the embeddings of ``keys`` under ``test_path`` by ``model_path`` are cached."""
    what = cache_key(model_path, test_path, keys, config)
    digest = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    folder = config["embedding_cache_dir"] or os.path.join(config["save_path"], CACHE_FOLDER)
    return os.path.join(folder, f"{os.path.basename(model_path)}.emb-{digest}.npz")


def read_cache(path: str, count: int) -> Embeddings:
    """The cache entry ``path`` (of ``count`` files), with the log line that says it was used."""
    logger.info("Embeddings of %d files read from the cache %s", count, path)
    return load_embeddings(path)


def write_cache(emb: Embeddings, path: str) -> bool:
    """Write the cache entry ``path`` atomically; a cache that cannot be written is a warning, not an error (the
    evaluation goes on without it). Whether it was written."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_embeddings(emb, path)
    except (OSError, OutputError) as err:
        logger.warning("Could not write the embedding cache %s (%s); continuing without it.", path, err,
                       extra=EVERY_RANK)  # a process's own share may be the one that fails
        return False
    logger.info("Embeddings cached in %s", path)
    return True


def cached_embeddings(model_path: str, test_path: str, keys: List[str], config: Dict[str, Any],
                      extract: Callable[[], Embeddings]) -> Embeddings:
    """Load the cached embeddings, or ``extract()`` them and write the cache (atomically)."""
    path = cache_path(model_path, test_path, keys, config)
    if os.path.isfile(path):
        return read_cache(path, len(keys))
    emb = extract()
    write_cache(emb, path)
    return emb
