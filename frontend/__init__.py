"""The SSL front-end (waveform -> stacked transformer layers) and the pre-trained checkpoint formats it reads.

``load_ssl_frontend`` (frontend/ssl_frontend.py) is the entry point; ``models/ssl_frontend.py`` keeps
the contract's import path ``from models.ssl_frontend import load_ssl_frontend``.
"""
