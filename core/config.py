"""One configuration loader for every command: defaults, YAML file, command line.

Precedence, lowest to highest: the defaults of :mod:`core.options`, then the YAML file
given with ``--config``, then options written explicitly on the command line.
Every YAML key must be a known option; an unknown key is an error naming the key, the
file and the closest known key. Booleans accept true/false/yes/no/1/0 (``augment: False``
and ``--augment false`` both mean false; ``--augment`` alone means true).
"""
from __future__ import annotations

import argparse
import difflib
import os
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence

import yaml

from core.errors import ConfigError
from core.files import write_text
from core.options import OPTION_BY_NAME, OPTIONS, defaults, parse_bool

PRECEDENCE = ("Configuration precedence (lowest to highest): built-in defaults, then the YAML file "
              "given with --config, then options given explicitly on the command line.")
# Files that must exist whenever they are set (empty = not used).
PATHS_IF_SET = ("embeddings", "cohort_embeddings", "mean_embeddings", "mean_list", "qmf_list")
# Not an option: the front-end architecture of a self-contained model file (SpeakerNet.apply_model_file),
# set in a configuration whose model is built from that file alone.
SSL_ARCHITECTURE = "ssl_architecture"


class Config(dict):
    """The resolved configuration: every option of :mod:`core.options` by name, plus ``config``
    (the YAML path) and the arguments of the command's own. ``cli`` holds the names of the
    options written on the command line (a tool that reads settings from another file lets
    exactly these win over it), ``yaml_keys`` those the YAML file sets."""

    cli: FrozenSet[str] = frozenset()
    yaml_keys: FrozenSet[str] = frozenset()

    def with_values(self, values: Dict[str, Any]) -> "Config":
        """A copy with ``values`` set, keeping where the options came from (``cli``, ``yaml_keys``)."""
        out = Config({**self, **values})
        out.cli, out.yaml_keys = self.cli, self.yaml_keys
        return out

    def sources(self) -> Dict[str, str]:
        """Where each option that was given came from: ``--key on the command line`` or ``the config
        file 'F'`` (for messages about a value that contradicts another file)."""
        out = {key: f"the config file '{self['config']}'" for key in self.yaml_keys}
        out.update({key: f"--{key} on the command line" for key in self.cli})
        return out


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add --config and every option, grouped by section; unset options stay absent from the namespace."""
    parser.add_argument("--config", type=str, default=None, help="YAML configuration file")
    groups: Dict[str, Any] = {}
    for opt in OPTIONS:
        group = groups.setdefault(opt.section, parser.add_argument_group(f"{opt.section} options"))
        extra: Dict[str, Any] = {"type": opt.type}
        if opt.type is parse_bool:
            extra["nargs"], extra["const"] = "?", True
        if getattr(opt.type, "choices", None):
            extra = {"type": str, "choices": opt.type.choices}  # argparse then names the valid values
        if getattr(opt.type, "nargs", None):
            extra = {"type": str, "nargs": opt.type.nargs}  # the words are joined by opt.type in load_config
        shown = "" if opt.default in ("", [], None) else f" (default: {opt.default!r})"
        group.add_argument(f"--{opt.name}", default=argparse.SUPPRESS, help=opt.help + shown, **extra)


def closest_key(key: str) -> Optional[str]:
    match = difflib.get_close_matches(key, OPTION_BY_NAME, n=1, cutoff=0.5)
    if not match:
        lower = {k.lower(): k for k in OPTION_BY_NAME}
        match = [lower[m] for m in difflib.get_close_matches(key.lower(), lower, n=1, cutoff=0.5)]
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


def load_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> Config:
    """Merge defaults, YAML and explicit command-line options into one validated :class:`Config`.

    ``parser`` must have been given :func:`add_options`; other arguments it defines are
    returned as parsed.
    """
    args = vars(parser.parse_args(argv))
    config = Config(defaults())
    config_path = args.pop("config")
    from_yaml = read_yaml(config_path) if config_path else {}
    config.update(from_yaml)
    for name in set(args) & set(OPTION_BY_NAME):
        if getattr(OPTION_BY_NAME[name].type, "nargs", None):
            args[name] = OPTION_BY_NAME[name].type(args[name])
    config.update(args)
    config["config"] = config_path or ""
    config.cli = frozenset(set(args) & set(OPTION_BY_NAME))
    config.yaml_keys = frozenset(from_yaml)
    validate(config)
    return config


def validate(config: Dict[str, Any]) -> None:
    """Checks that need no data: value ranges, option combinations, options that cannot run here."""
    for key in ("batch_size", "nPerSpeaker", "max_epoch", "test_interval", "num_eval", "grad_accum"):
        if config[key] < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {config[key]}.")
    if config["global_batch"] < 0:
        raise ConfigError(f"'global_batch' must be 0 (off) or positive, got {config['global_batch']}.")
    if config["top_n"] < 2:
        raise ConfigError(f"'top_n' must be at least 2 (a standard deviation needs two cohort scores), "
                          f"got {config['top_n']}.")
    if config["layer_drop"] is not None and not 0.0 <= config["layer_drop"] < 1.0:
        raise ConfigError(f"'layer_drop' must be in [0, 1), got {config['layer_drop']}.")
    if config["aug_prob"] is not None and not 0.0 <= config["aug_prob"] <= 1.0:
        raise ConfigError(f"'aug_prob' must be in [0, 1] (or null for the original's choice), "
                          f"got {config['aug_prob']}.")
    if config["sampler"] == "utterance" and config["nPerSpeaker"] != 1:
        raise ConfigError(f"'sampler: utterance' draws single utterances, so nPerSpeaker must be 1, got "
                          f"{config['nPerSpeaker']}; use 'sampler: speaker' for groups of one speaker's utterances.")
    if config["initial_model_average"] < 1:
        raise ConfigError(f"'initial_model_average' must be at least 1, got {config['initial_model_average']}.")
    if config["initial_model_average"] > 1 and not config["initial_model_from"]:
        raise ConfigError(f"'initial_model_average: {config['initial_model_average']}' averages checkpoints of "
                          f"initial_model_from, which is not set; set initial_model_from (the previous stage's "
                          f"save_path), or average files with python -m tools.average_models.")
    if config["min_audio_seconds"] < 0:
        raise ConfigError(f"'min_audio_seconds' must not be negative, got {config['min_audio_seconds']}.")
    if config["eval_batch_seconds"] <= 0:
        raise ConfigError(f"'eval_batch_seconds' must be positive, got {config['eval_batch_seconds']}.")
    if config["score_norm"] != "none" and not config["cohort_embeddings"]:
        raise ConfigError(f"score_norm {config['score_norm']} needs cohort_embeddings (an .npz with one row per "
                          f"cohort speaker; python -m tools.make_cohort makes one).")


def _divisors(n: int) -> List[int]:
    """The divisors of ``n`` (n >= 1), largest first."""
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]), reverse=True)


def resolve_grad_accum(config: Dict[str, Any], processes: int) -> int:
    """The grad_accum a training run uses on ``processes`` data-parallel processes (1 without --distributed).

    ``global_batch`` 0 (off): ``grad_accum`` as given. Otherwise grad_accum = global_batch / (batch_size x
    processes), which must be a whole number of at least 1; a ``grad_accum`` other than its default 1 must
    equal it. Either failure is a :class:`ConfigError` that names the values and says which would work.
    """
    global_batch, batch_size, given = config["global_batch"], config["batch_size"], config["grad_accum"]
    if not global_batch:
        return given
    per_step = batch_size * processes
    procs = f"{processes} process{'es' if processes != 1 else ''}"
    if global_batch % per_step:
        below = global_batch // per_step * per_step
        nearest = sorted({max(per_step, below), below + per_step})
        message = (f"global_batch {global_batch} is not a whole number of batches of batch_size {batch_size} x "
                   f"{procs} = {per_step} (grad_accum = global_batch / (batch_size x processes) = "
                   f"{global_batch / per_step:g}). With batch_size {batch_size} on {procs}, global_batch can be a "
                   f"multiple of {per_step} (the nearest: {' or '.join(map(str, nearest))})")
        if global_batch % processes:
            counts = _divisors(global_batch)[::-1]
            message += (f"; global_batch {global_batch} itself needs a process count that divides it "
                        f"({', '.join(map(str, counts[:8]))}{', ...' if len(counts) > 8 else ''}).")
        else:
            fits = _divisors(global_batch // processes)
            shown = ", ".join(map(str, fits[:8])) + (", ..." if len(fits) > 8 else "")
            message += (f"; to keep global_batch {global_batch} on {procs}, batch_size can be {shown} (the divisors "
                        f"of {global_batch} / {processes} = {global_batch // processes}).")
        raise ConfigError(message)
    derived = global_batch // per_step
    if given not in (1, derived):
        where = getattr(config, "sources", lambda: {})().get("grad_accum")
        raise ConfigError(f"global_batch {global_batch} and grad_accum {given}{f' ({where})' if where else ''} "
                          f"disagree: global_batch gives grad_accum {global_batch} / (batch_size {batch_size} x "
                          f"{procs}) = {derived}. Set one of them: drop grad_accum (global_batch derives it), or set "
                          f"global_batch to {batch_size * processes * given} (0 = off) to keep grad_accum {given}.")
    return derived


def require_paths(config: Dict[str, Any], keys: Iterable[str]) -> None:
    """Fail at start-up, before any loading, if a needed file/folder is not set or missing.
    A list-valued option (``test_list``) needs each of its paths."""
    for key in keys:
        value = config[key]
        if not value:
            raise ConfigError(f"'{key}' is not set: give it in the YAML file or as --{key}.")
        for path in value if isinstance(value, list) else [value]:
            if not os.path.exists(path):
                raise ConfigError(f"'{key}' points to '{path}', which does not exist.")


def require_paths_if_set(config: Dict[str, Any], keys: Iterable[str] = PATHS_IF_SET) -> None:
    """:func:`require_paths` for the optional inputs that are set."""
    require_paths(config, [key for key in keys if config[key]])


def frontend_paths(config: Dict[str, Any]) -> List[str]:
    """The options naming the files the model of ``config`` is built from: ``pretrained_model_path``, unless
    the model comes from a self-contained model file alone (:data:`SSL_ARCHITECTURE` set)."""
    return [] if config.get(SSL_ARCHITECTURE) is not None else ["pretrained_model_path"]


def save_config(config: Dict[str, Any], path: str) -> None:
    """Write the resolved configuration (every option; re-loadable with --config), atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, yaml.safe_dump({o.name: config[o.name] for o in OPTIONS}, sort_keys=False))
