"""Alias kept for the original configs: ``model: Baseline.Spk_Encoder`` is ``model: MHFA``."""
from models.MHFA import MainModel

__all__ = ["MainModel"]
