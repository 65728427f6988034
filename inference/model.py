"""A trained speaker model as a Python object: embed waveforms and files, score pairs, with the evaluation's
protocol and score normalisation.

    >>> from inference import load_model  # doctest: +SKIP
    >>> model = load_model("exp/Baseline_lm/model/model000000015.model")  # doctest: +SKIP
    >>> model.score("a.wav", "b.wav")  # doctest: +SKIP
    0.5341

A model file written by training holds its architecture and options (:func:`model_files.apply_model_file`),
so the file is all :func:`load_model` needs; older files and the original repository's need ``config`` (the
YAML of their run) or ``pretrained_model_path`` and the model options. Embeddings are those of the
evaluation: whole-file embedding (capped at ``max_eval_seconds``, ``eval_long_files``) and, when
``eval_frames`` > 0, ``num_eval`` evenly spaced crops; :meth:`SpeakerModel.embed_files` runs the
evaluation's own batched extraction (:func:`evaluation.pipeline.extract_files`).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from core.audio import SAMPLE_RATE, load_audio, resample
from core.config import GIVEN, YAML_FILE, Config, closest_key, frontend_paths, read_yaml, require_paths, validate
from core.device import autocast_dtype, resolve_device
from core.errors import ConfigError, DataError
from core.options import OPTION_BY_NAME
from evaluation.dataset import eval_crops, require_embeddable, shortest_input, whole_file_pieces
from evaluation.embeddings import Embeddings, load_embeddings, load_mean
from evaluation.extraction import combine_pieces
from evaluation.pipeline import extract_files
from evaluation.scoring import score_all
from evaluation.trials import Trials
from model_files import build_speaker_encoder, with_model_file

Waveform = Union[np.ndarray, torch.Tensor]
Input = Union[str, os.PathLike, np.ndarray, torch.Tensor, Embeddings]


def model_settings(path: str, config: str = "", **options: Any) -> Config:
    """The resolved configuration of model file ``path`` on the option ladder (core/config.py): defaults, the
    model file's protocol, the YAML ``config`` (if any), then ``options`` (option names of the table, e.g.
    ``score_norm='asnorm'``: the API's rung, as the command line's), the model file's model options fixed by it (a
    model option that contradicts it is a ConfigError naming both)."""
    for key in options:
        if key not in OPTION_BY_NAME:
            hint = closest_key(key)
            raise ConfigError(f"load_model: unknown option '{key}'." + (f" Did you mean '{hint}'?" if hint else ""))

    def bad(key: str, value: Any, err: Exception) -> ConfigError:
        return ConfigError(f"load_model: bad value for '{key}': {value!r} ({err}).")

    settings = (Config.of_defaults()
                .climb(YAML_FILE, read_yaml(config) if config else {}, f"the config file '{config}'")
                .climb(GIVEN, options, "load_model({key}=...)", bad=bad)
                .climb(GIVEN, {"initial_model": str(path), "embeddings": ""}, "load_model's path")
                .with_values({"config": config}))
    validate(settings)
    resolved = with_model_file(settings)
    require_paths(resolved, frontend_paths(resolved))
    return resolved


def load_model(path: Union[str, os.PathLike], config: str = "", device: str = "auto", **options: Any) -> "SpeakerModel":
    """Load a model file for embedding and scoring.

    Args:
        path: a model file (``model/model%09d.model`` of a run, an averaged model, an original-repo file).
        config: the YAML of the run, needed only for files that do not hold their architecture.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        options: any option of ``--help`` by name: the extraction protocol (``eval_frames``,
            ``num_eval``, ...; default: the one the model was trained with) and scoring (``score_norm``,
            ``cohort_embeddings``, ``top_n``, ``mean_embeddings``).
    """
    settings = model_settings(str(path), config, **{"device": device, **options})
    device_ = resolve_device(settings["device"])
    return SpeakerModel(build_speaker_encoder(settings, device_).eval(), settings, device_)


def as_waveforms(waves: Union[Waveform, Sequence[Waveform]], sample_rate: int) -> List[np.ndarray]:
    """One waveform [N], rows of [B, N], or a list of waveforms -> a list of 16 kHz float32 arrays."""
    if isinstance(waves, (np.ndarray, torch.Tensor)):
        waves = [waves] if waves.ndim == 1 else list(waves)
    out = []
    for i, wave in enumerate(waves):
        wave = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise DataError(f"Waveform {i} has shape {wave.shape}: give a 1-D mono waveform [N] (or a list of them; "
                            f"for multi-channel audio, average the channels first).")
        out.append(resample(wave.astype(np.float32), sample_rate, SAMPLE_RATE))
    return out


class SpeakerModel:
    """A speaker encoder with the evaluation's protocol (``settings``: the resolved configuration)."""

    def __init__(self, encoder: torch.nn.Module, settings: Dict[str, Any], device: torch.device):
        self.encoder, self.settings, self.device = encoder, settings, device
        norm = settings["score_norm"]
        self.cohort = load_embeddings(settings["cohort_embeddings"]).embeddings if norm != "none" else None
        self.mean = (load_mean(settings["mean_embeddings"], settings["mean_list"])
                     if settings["mean_embeddings"] else None)

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        autocast = (torch.autocast(self.device.type, dtype=autocast_dtype(self.device))
                    if self.settings["eval_autocast"] else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            return self.encoder(batch.to(self.device)).float().cpu().numpy()

    def embed(self, waves: Union[Waveform, Sequence[Waveform]], sample_rate: int = SAMPLE_RATE,
              keys: Optional[Sequence[str]] = None) -> Embeddings:
        """Embeddings of waveforms in memory, as the evaluation makes them for files.

        Args:
            waves: one mono waveform [N] (float, in [-1, 1] like a file's samples), a [B, N] array, or a list.
            sample_rate: their rate; other than 16 kHz they are resampled as files are.
            keys: names of the rows (default ``wave0``, ``wave1``, ...).
        Returns:
            Embeddings (``embeddings`` [B, D] whole-file, ``crop_embeddings`` [B, num_eval, D] or None,
            ``durations`` in seconds).
        """
        s = self.settings
        max_samples = int(s["max_eval_seconds"] * SAMPLE_RATE) if s["max_eval_seconds"] > 0 else None
        whole, crops, durations = [], [], []
        for audio in as_waveforms(waves, sample_rate):
            pieces = whole_file_pieces(audio.shape[0], max_samples, s["eval_long_files"])
            rows = np.concatenate([self._forward(torch.from_numpy(audio[a:b])[None]) for a, b in pieces])
            whole.append(combine_pieces(rows, [b - a for a, b in pieces]))  # the extraction's length-weighted mean
            if s["eval_frames"] > 0:
                crops.append(self._forward(torch.from_numpy(eval_crops(audio, s["eval_frames"], s["num_eval"]))))
            durations.append(audio.shape[0] / SAMPLE_RATE)
        keys = list(keys) if keys is not None else [f"wave{i}" for i in range(len(whole))]
        if len(keys) != len(whole):
            raise DataError(f"{len(keys)} keys for {len(whole)} waveforms.")
        return Embeddings(keys, np.stack(whole), np.stack(crops) if crops else None,
                          np.array(durations, dtype=np.float32))

    def embed_file(self, path: Union[str, os.PathLike]) -> Embeddings:
        """Embeddings of one audio file (any rate and channels, converted as the evaluation does); a file
        shorter than one frame of the front-end is a DataError naming it."""
        audio = load_audio(str(path))
        require_embeddable([str(path)], [audio.shape[0]], shortest_input(self.encoder))
        return self.embed(audio, keys=[str(path)])

    def embed_files(self, paths: Sequence[Union[str, os.PathLike]], root: str = "", verbose: bool = True) -> Embeddings:
        """Embeddings of many files with the evaluation's batched extraction and a progress bar; keys are
        ``paths`` as given (relative to ``root``, or keys of a Kaldi data folder's wav.scp as ``root``)."""
        return extract_files(self.settings, [str(p) for p in paths], root, self.encoder, self.device, verbose=verbose)

    def _as_embeddings(self, item: Input, key: str) -> Embeddings:
        if isinstance(item, Embeddings):
            if len(item.keys) != 1:
                raise DataError(f"score: the {key} embeddings hold {len(item.keys)} files; give one.")
            return Embeddings([key], item.embeddings, item.crop_embeddings, item.durations)
        if isinstance(item, (str, os.PathLike)):
            emb = self.embed_file(item)
        else:
            emb = self.embed(item)
        return Embeddings([key], emb.embeddings, emb.crop_embeddings, emb.durations)

    def score(self, enroll: Input, test: Input) -> float:
        """The evaluation's score of a trial: each side a file path, a waveform (16 kHz) or one file's
        Embeddings; original protocol, then ``mean_embeddings`` and AS-norm / S-norm as configured."""
        a, b = self._as_embeddings(enroll, "enroll"), self._as_embeddings(test, "test")
        if (a.crop_embeddings is None) != (b.crop_embeddings is None):
            raise DataError("score: one side has crop embeddings and the other not (made with other eval_frames).")
        crops = None if a.crop_embeddings is None else np.concatenate([a.crop_embeddings, b.crop_embeddings])
        pair = Embeddings(["enroll", "test"], np.concatenate([a.embeddings, b.embeddings]), crops)
        scored = score_all(pair, {"pair": Trials(None, ["enroll"], ["test"])}, self.settings["score_norm"],
                           self.cohort, self.settings["top_n"], self.mean)
        return float(scored.scores["pair"][0])
