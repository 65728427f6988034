"""One configuration loader for every command, and the one option ladder every command, tool and the API climbs.

**The option ladder**, lowest to highest; each rung overrides the ones below it:

1. the built-in defaults of :mod:`core.options`;
2. a self-contained model file's extraction protocol (the options of role ``protocol``: the file's
   ``initial_model`` was trained with them; model_files.with_model_file);
3. the YAML file (``--config``; ``config=`` of inference.load_model);
4. a threshold file (``--threshold_file`` of tools.verify): the options of role ``threshold``, the settings
   its threshold was measured with, and ``threshold`` itself (the file's ``eer_threshold``);
5. options written on the command line, or given by name to inference.load_model (the API).

Above the ladder, a self-contained model file fixes the options of role ``model`` (they shape its tensors or
its embeddings): its value is final, and one given on rung 3, 4 or 5 with another value is a ConfigError naming
both values and both places. The roles are declared per option in :data:`core.options.ROLES`. A
:class:`Config` records for each option the rung and place its value came from (:meth:`Config.origin`), so
any rung may be added later (:meth:`Config.climb`: the model file and the threshold file are named by the
configuration itself) and messages name where a value was given.

Every YAML key must be a known option; an unknown key is an error naming the key, the
file and the closest known key. Booleans accept true/false/yes/no/1/0 (``augment: False``
and ``--augment false`` both mean false; ``--augment`` alone means true).
"""
from __future__ import annotations

import argparse
import difflib
import os
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from core.errors import ConfigError, ToolkitError
from core.files import write_text
from core.options import MODEL, OPTION_BY_NAME, OPTIONS, PROTOCOL, THRESHOLD, defaults, parse_bool

PRECEDENCE = ("Configuration precedence (lowest to highest): built-in defaults, then a self-contained model "
              "file's extraction protocol, then the YAML file given with --config, then a threshold file "
              "(tools.verify --threshold_file), then options given explicitly on the command line; the model "
              "options of a self-contained model file are fixed by it (another value given is an error).")
# Files that must exist whenever they are set (empty = not used).
PATHS_IF_SET = ("embeddings", "cohort_embeddings", "mean_embeddings", "mean_list", "qmf_list")
# Not an option: the front-end architecture of a self-contained model file (model_files.apply_model_file),
# set in a configuration whose model is built from that file alone.
SSL_ARCHITECTURE = "ssl_architecture"

# The rungs of the option ladder (module docstring), lowest to highest; LOCKED: a model file's model options.
DEFAULT, MODEL_FILE, YAML_FILE, THRESHOLD_FILE, GIVEN, LOCKED = range(6)
RUNG_NAMES = ("the defaults", "a model file's protocol", "the YAML file", "a threshold file",
              "the command line / API", "a model file's model options")
EXPLICIT = (YAML_FILE, THRESHOLD_FILE, GIVEN)  # the rungs where a person wrote the value
# The options a rung takes from what it is given (the others are ignored: a model file's header holds every option
# of its run, a threshold file its results too); a rung not here takes every option.
RUNG_ROLES = {MODEL_FILE: (MODEL, PROTOCOL), THRESHOLD_FILE: (THRESHOLD,)}
LOCK_HINT = (". The model file defines the model it holds: remove those options (or give the file's values), "
             "or give another model file.")

Agrees = Callable[[str, Any, Any], bool]
BadValue = Callable[[str, Any, Exception], ToolkitError]


class Config(dict):
    """The resolved configuration: every option of :mod:`core.options` by name, plus ``config``
    (the YAML path) and the arguments of the command's own. ``origins`` holds, for each option not at its
    default, the rung of the ladder it came from and where: ``(GIVEN, "--nOut on the command line")``."""

    origins: Dict[str, Tuple[int, str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.origins = {}

    @classmethod
    def of_defaults(cls) -> "Config":
        """Every option at its default: the ladder's first rung."""
        return cls(defaults())

    @classmethod
    def given(cls, values: Mapping[str, Any], sources: Mapping[str, str]) -> "Config":
        """A Config of a plain mapping whose options ``sources`` names (option -> where, e.g. ``--nOut on the
        command line``) were given explicitly; the others count as defaults."""
        out = cls(values)
        out.origins = {key: (GIVEN, where) for key, where in sources.items()}
        return out

    def with_values(self, values: Mapping[str, Any]) -> "Config":
        """A copy with ``values`` set outside the ladder (a command's own results), keeping the origins."""
        out = Config({**self, **values})
        out.origins = dict(self.origins)
        return out

    def origin(self, key: str) -> Tuple[int, str]:
        """(rung, where) of option ``key``'s value; ``(DEFAULT, 'the defaults')`` for one nobody set."""
        return self.origins.get(key, (DEFAULT, RUNG_NAMES[DEFAULT]))

    def given_on(self, *rungs: int) -> FrozenSet[str]:
        """The options whose values came from ``rungs``."""
        return frozenset(key for key, (rung, _) in self.origins.items() if rung in rungs)

    @property
    def cli(self) -> FrozenSet[str]:
        """The options written on the command line (or given to the API)."""
        return self.given_on(GIVEN)

    def sources(self) -> Dict[str, str]:
        """Where each option that was given explicitly came from: ``--key on the command line``, ``the config
        file 'F'``, ``the threshold file 'F'`` (for messages about a value that contradicts another file)."""
        return {key: where for key, (rung, where) in self.origins.items() if rung in EXPLICIT}

    def climb(self, rung: int, values: Mapping[str, Any], where: str, agrees: Optional[Agrees] = None,
              bad: Optional[BadValue] = None) -> "Config":
        """A copy with ``values`` given on ``rung`` of the ladder (the module docstring states the order).

        ``where`` says where they were given; ``{key}`` in it stands for each option's name (``--{key} on the
        command line``). The rung takes the options of its roles (:data:`RUNG_ROLES`) and ignores the other
        keys; on the others every key must be an option. Each value is converted by its option's type (a failure
        is ``bad(key, value, error)``, by default a ConfigError naming ``where``). A value replaces the current
        one when its rung is at least as high. The model options of a model file (role ``model``) are locked:
        they replace any value, and one given explicitly (YAML, threshold file, command line / API) that differs
        (``agrees(key, given, fixed)`` false; default ``==``) is a ConfigError naming both values and places.
        """
        agrees = agrees or (lambda key, given, fixed: given == fixed)
        roles = RUNG_ROLES.get(rung)
        unknown = [key for key in values if key not in OPTION_BY_NAME]
        if roles is None and unknown:
            raise ConfigError(f"Unknown option '{unknown[0]}' in {where.replace('{key}', unknown[0])}.")
        out, conflicts = self.with_values({}), []
        for opt in OPTIONS:
            if opt.name not in values or (roles is not None and not opt.roles & set(roles)):
                continue
            key, place = opt.name, where.replace("{key}", opt.name)
            try:
                value = opt.type(values[key])
            except (TypeError, ValueError) as err:
                raise (bad(key, values[key], err) if bad else ConfigError(
                    f"Bad value for '{key}' in {place}: {values[key]!r} ({err}).")) from err
            level = LOCKED if rung == MODEL_FILE and MODEL in opt.roles else rung
            old_level, old_place = out.origin(key)
            if LOCKED in (level, old_level) and level != old_level:
                given, fixed = (out[key], value) if level == LOCKED else (value, out[key])
                given_place, fixed_place = (old_place, place) if level == LOCKED else (place, old_place)
                if min(level, old_level) in EXPLICIT and not agrees(key, given, fixed):
                    conflicts.append(f"{key} is {given!r} in {given_place} but {fixed!r} in {fixed_place}")
                out[key], out.origins[key] = fixed, (LOCKED, fixed_place)
            elif level >= old_level:
                out[key], out.origins[key] = value, (level, place)
        if conflicts:
            raise ConfigError("; ".join(conflicts) + LOCK_HINT)
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
    """Merge defaults, YAML and explicit command-line options (rungs 1, 3 and 5 of the ladder) into one
    validated :class:`Config`.

    ``parser`` must have been given :func:`add_options`; other arguments it defines are
    returned as parsed.
    """
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config")
    given = {name: args.pop(name) for name in list(args) if name in OPTION_BY_NAME}
    config = (Config.of_defaults()
              .climb(YAML_FILE, read_yaml(config_path) if config_path else {}, f"the config file '{config_path}'")
              .climb(GIVEN, given, "--{key} on the command line")
              .with_values({"config": config_path or "", **args}))
    validate(config)
    return config


def available_cpus() -> int:
    """The CPUs this process may use (its affinity where the system says, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(config: Dict[str, Any]) -> int:
    """``nDataLoaderThread``, or by default what the machine has: its CPUs, at most 4 (more workers than CPUs only
    compete with the main process)."""
    given = config["nDataLoaderThread"]
    return min(4, available_cpus()) if given is None else given


def validate(config: Dict[str, Any]) -> None:
    """Checks that need no data: value ranges, option combinations, options that cannot run here."""
    for key in ("batch_size", "nPerSpeaker", "max_epoch", "test_interval", "num_eval", "grad_accum"):
        if config[key] < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {config[key]}.")
    if config["nDataLoaderThread"] is not None and config["nDataLoaderThread"] < 0:
        raise ConfigError(f"'nDataLoaderThread' must be 0 (load in the main process) or more, got "
                          f"{config['nDataLoaderThread']}.")
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


def changed_options(config: Dict[str, Any]) -> Dict[str, Any]:
    """The options of ``config`` that differ from their defaults, in the option table's order."""
    default = defaults()
    return {o.name: config[o.name] for o in OPTIONS if o.name in config and config[o.name] != default[o.name]}


def describe_config(config: Dict[str, Any], saved: str) -> str:
    """The configuration for the top of a run's log: a YAML block of the options not at their defaults (re-loadable
    as a --config), after a line saying where every option is (``saved``: result/config.yaml)."""
    changed = changed_options(config)
    block = yaml.safe_dump(changed, sort_keys=False, default_flow_style=False).rstrip("\n") if changed else "{}"
    return (f"Configuration: {len(changed)} option(s) not at their defaults, below as YAML; every option: {saved}\n"
            f"{block}")


def save_config(config: Dict[str, Any], path: str) -> None:
    """Write the resolved configuration (every option; re-loadable with --config), atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, yaml.safe_dump({o.name: config[o.name] for o in OPTIONS}, sort_keys=False))
