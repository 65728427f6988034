"""The contract's import path of the front-end API (REFERENCE §4): ``from models.ssl_frontend import
load_ssl_frontend``. The code lives in ``frontend/ssl_frontend.py``; this module is no model plug-in
(it has no ``MainModel``), so ``model: ssl_frontend`` is refused with the list of real models."""
from frontend.ssl_frontend import SSLFrontend, load_ssl_frontend

__all__ = ["SSLFrontend", "load_ssl_frontend"]
