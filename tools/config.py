"""One configuration loader for training and evaluation.

Precedence, lowest to highest: the defaults below, then the YAML file given
with ``--config``, then options written explicitly on the command line.
Every YAML key must be a known option; an unknown key is an error naming the
key, the file and the closest known key. Booleans accept true/false/yes/no/1/0
(``augment: False`` and ``--augment false`` both mean false; ``--augment``
alone means true).
"""
from __future__ import annotations

import argparse
import difflib
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, TypeVar

import yaml


class ConfigError(ValueError):
    """Invalid configuration (unknown key, bad value, missing path)."""


def parse_bool(value: Any) -> bool:
    """Parse a boolean from YAML or the command line (true/false/yes/no/on/off/1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "on", "1"):
        return True
    if text in ("false", "no", "n", "off", "0"):
        return False
    raise ValueError(f"expected a boolean (true/false/yes/no/1/0), got {value!r}")


def optional_str(value: Any) -> str:
    """Paths: YAML null / 'None' become an empty string (= not given)."""
    return "" if value is None or str(value) in ("None", "none", "null") else str(value)


def one_of(*choices: str) -> Callable[[Any], str]:
    """Parser of an option that takes one of ``choices``."""
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text
    parse.choices = choices  # type: ignore[attr-defined]  # add_options gives them to argparse
    return parse


LONG_FILE_MODES = ("cut", "chunks")  # eval_long_files: see DatasetLoader.whole_file_pieces


class Option(NamedTuple):
    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str


_S, _F, _I, _B = optional_str, float, int, parse_bool
OPTIONS: List[Option] = [
    # data loader
    Option("max_frames", _I, 200, "training crop length in 10 ms frames (samples = max_frames*160+240)"),
    Option("eval_frames", _I, 300, "evaluation crop length in frames; 0 uses the whole file"),
    Option("num_eval", _I, 5, "number of evenly spaced evaluation crops per file"),
    Option("batch_size", _I, 120, "batch size (number of speakers per batch)"),
    Option("max_seg_per_spk", _I, 500, "maximum utterances per speaker per epoch"),
    Option("nPerSpeaker", _I, 1, "utterances per speaker per batch"),
    Option("nDataLoaderThread", _I, 4, "data loader worker processes"),
    Option("augment", _B, False, "augment training audio with MUSAN noise and RIR reverberation"),
    Option("seed", _I, 20211202, "random seed"),
    # training
    Option("test_interval", _I, 1, "evaluate and save a checkpoint every N epochs"),
    Option("max_epoch", _I, 15, "number of epochs"),
    Option("trainfunc", _S, "aamsoftmax", "loss module in loss/"),
    Option("optimizer", _S, "adamw", "optimizer module in optimizer/ (adam, adamw, sgd)"),
    Option("scheduler", _S, "steplr", "scheduler module in scheduler/"),
    Option("lr", _F, 0.001, "optimizer default learning rate; every parameter group sets its own "
                            "(LR_MHFA, LR_Transformer), so like the original this is unused by MHFA models"),
    Option("lr_decay", _F, 0.95, "learning-rate decay factor every test_interval epochs (steplr)"),
    Option("margin", _F, 0.2, "AAM-softmax margin m"),
    Option("scale", _F, 30.0, "AAM-softmax scale s"),
    Option("margin_warmup_epochs", _F, 0.0, "ramp the margin linearly from 0 to `margin` over this many "
                                             "epochs (per iteration); 0 = fixed margin as the original"),
    Option("nClasses", _I, 5994, "number of training speakers"),
    # pre-trained transformer
    Option("pretrained_model_path", _S, "", "pre-trained SSL checkpoint: official WavLM .pt, fairseq HuBERT / "
                                            "wav2vec 2.0 .pt, or a Hugging Face model folder (format detected)"),
    Option("trust_checkpoint", _B, False, "allow arbitrary unpickling of checkpoints (only for trusted files; "
                                          "legacy fairseq files with an argparse Namespace need it)"),
    Option("allow_partial_checkpoint", _B, False, "load a pre-trained checkpoint even if some of its encoder "
                                                  "tensors are unused or missing (they are logged by name)"),
    Option("normalize_input", _B, False, "normalise each waveform before the SSL model (off, as the original)"),
    Option("freeze_ssl", _B, False, "freeze the whole SSL front-end: eval mode, no_grad, no backward, no "
                                    "optimizer groups (only MHFA and the loss train)"),
    Option("freeze_cnn", _B, True, "freeze the CNN feature encoder, feature projection and positional conv "
                                   "(as the original); false trains them at LR_Transformer"),
    Option("feature_grad_mult", _F, 1.0, "scale of the gradient into the CNN (fairseq feature_grad_mult; "
                                         "needs freeze_cnn: false)"),
    Option("layer_drop", _F, 0.0, "probability of skipping each transformer block in training (LayerDrop)"),
    Option("grad_checkpointing", _B, False, "recompute transformer blocks in backward to save memory "
                                            "(joint fine-tuning of Large models on long crops)"),
    Option("weight_finetuning_reg", _F, 0.01, "weight of the regulariser toward the pre-trained weights"),
    Option("reg_loss", one_of("original", "plain"), "original",
           "'original': CE/sg(CE) + reg*r/(sg(r)+1e-5) as the paper ran; 'plain': CE + reg*r"),
    Option("LLRD_factor", _F, 1.0, "layer-wise learning-rate decay: block i gets LR_Transformer*LLRD_factor^i"),
    Option("LR_Transformer", _F, 2e-5, "learning rate of the transformer blocks"),
    Option("LR_MHFA", _F, 5e-3, "learning rate of the MHFA back-end and the loss"),
    # evaluation
    Option("dcf_p_target", _F, 0.05, "prior of a target trial for the logged MinDCF"),
    Option("dcf_c_miss", _F, 1.0, "cost of a miss"),
    Option("dcf_c_fa", _F, 1.0, "cost of a false alarm"),
    Option("max_eval_seconds", _F, 43.75, "cap on the whole-file embedding input (43.75 s = the original's "
                                          "700,000 samples, set for GPU memory); longer files are logged"),
    Option("eval_long_files", one_of(*LONG_FILE_MODES), "cut",
           "files longer than max_eval_seconds: 'cut' to the cap (the original) or 'chunks': split into "
           "near-equal pieces within the cap, embedding = length-weighted mean of the piece embeddings"),
    # load and save
    Option("initial_model", _S, "", "start from this model file (e.g. the previous stage's)"),
    Option("save_path", _S, "exps/exp1", "experiment folder (model/ and result/ are made inside)"),
    # data
    Option("train_list", _S, "", "training list: 'speaker_id relative/path.wav' per line"),
    Option("test_list", _S, "", "trial list: 'label enroll.wav test.wav' per line"),
    Option("train_path", _S, "", "folder the training list paths are relative to"),
    Option("test_path", _S, "", "folder the trial list paths are relative to"),
    Option("musan_path", _S, "", "MUSAN folder (noise/ speech/ music/)"),
    Option("rir_path", _S, "", "RIR folder (<room type>/<room>/<file>.wav)"),
    # model
    Option("model", _S, "MHFA", "model module in models/ (MHFA; Baseline.Spk_Encoder is an alias)"),
    Option("nOut", _I, 256, "embedding size"),
    Option("head_nb", _I, 32, "MHFA number of attention heads"),
    Option("compression_dim", _I, 128, "MHFA compression dimension"),
    # runtime
    Option("device", _S, "auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'"),
    Option("port", _S, "7888", "port for distributed training"),
    Option("distributed", _B, False, "distributed data-parallel training (not available yet: rejected)"),
    Option("mixedprec", _B, False, "mixed precision (float16 autocast + grad scaling on CUDA, bfloat16 on CPU)"),
    Option("eval", _B, False, "evaluate only"),
]
OPTION_BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}
PRECEDENCE = ("Configuration precedence (lowest to highest): built-in defaults, then the YAML file "
              "given with --config, then options given explicitly on the command line.")


def defaults() -> Dict[str, Any]:
    return {o.name: o.default for o in OPTIONS}


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add --config and every option; unset options stay absent from the namespace."""
    parser.add_argument("--config", type=str, default=None, help="YAML configuration file")
    for opt in OPTIONS:
        extra: Dict[str, Any] = {"nargs": "?", "const": True} if opt.type is parse_bool else {}
        choices = getattr(opt.type, "choices", None)
        if choices:  # argparse then names the valid values in its error
            extra = {"choices": choices}
        parser.add_argument(f"--{opt.name}", type=str if choices else opt.type, default=argparse.SUPPRESS,
                            help=f"{opt.help} (default: {opt.default!r})", **extra)


def closest_key(key: str) -> Optional[str]:
    match = difflib.get_close_matches(key, OPTION_BY_NAME, n=1, cutoff=0.5)
    if not match:
        match = difflib.get_close_matches(key.lower(), {k.lower(): k for k in OPTION_BY_NAME}, n=1, cutoff=0.5)
        match = [next(k for k in OPTION_BY_NAME if k.lower() == match[0])] if match else []
    return match[0] if match else None


def read_yaml(path: str) -> Dict[str, Any]:
    """Read and validate a YAML config; values are converted to each option's type."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file '{path}' does not exist.")
    with open(path, encoding="utf-8") as handle:
        try:
            raw = yaml.safe_load(handle) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"Config file '{path}' is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file '{path}' must be a mapping of 'key: value' lines.")
    out = {}
    for key, value in raw.items():
        if key not in OPTION_BY_NAME:
            hint = closest_key(str(key))
            raise ConfigError(f"Unknown key '{key}' in config file '{path}'."
                              + (f" Did you mean '{hint}'?" if hint else "")
                              + " Run with --help for the list of keys.")
        try:
            out[key] = OPTION_BY_NAME[key].type(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"Bad value for '{key}' in config file '{path}': {value!r} ({err}).") from err
    return out


def load_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Merge defaults, YAML and explicit command-line options into one dict.

    ``parser`` must have been given :func:`add_options`; other arguments it
    defines are returned as parsed.
    """
    args = vars(parser.parse_args(argv))
    config = defaults()
    config_path = args.pop("config")
    if config_path:
        config.update(read_yaml(config_path))
    config.update(args)
    config["config"] = config_path or ""
    validate(config)
    return config


Result = TypeVar("Result")


def run_cli(parser: argparse.ArgumentParser, action: Callable[[Dict[str, Any]], Result],
            argv: Optional[Sequence[str]] = None) -> Result:
    """Entry-point wrapper: merge the configuration and run ``action`` on it. Bad input (config,
    lists, audio, checkpoints) ends with ``error: <message>`` on stderr and exit status 2, no traceback."""
    try:
        return action(load_config(parser, argv))
    except (ValueError, OSError) as err:  # ConfigError and DataError are ValueErrors
        parser.exit(2, f"error: {err}\n")


def validate(config: Dict[str, Any]) -> None:
    """Checks that need no data: value ranges and options that cannot run here."""
    if config["distributed"]:
        raise ConfigError("'distributed: true' is not available yet in this toolkit; "
                          "run on one device (remove the key or set it to false).")
    for key in ("batch_size", "nPerSpeaker", "max_epoch", "test_interval", "num_eval"):
        if config[key] < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {config[key]}.")


def require_paths(config: Dict[str, Any], keys: Sequence[str]) -> None:
    """Fail at start-up, before any loading, if a needed file/folder is not set or missing."""
    for key in keys:
        value = config[key]
        if not value:
            raise ConfigError(f"'{key}' is not set: give it in the YAML file or as --{key}.")
        if not os.path.exists(value):
            raise ConfigError(f"'{key}' points to '{value}', which does not exist.")


def save_config(config: Dict[str, Any], path: str) -> None:
    """Write the resolved configuration (re-loadable with --config)."""
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({k: v for k, v in config.items() if k in OPTION_BY_NAME}, handle, sort_keys=False)
