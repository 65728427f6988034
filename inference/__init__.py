"""Use a trained model outside the trainer: the Python API (:mod:`inference.model`) and TorchScript / ONNX
export (:mod:`inference.export`)."""
from inference.model import SpeakerModel, load_model

__all__ = ["SpeakerModel", "load_model"]
