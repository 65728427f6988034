"""Import a speaker model trained with wespeaker's SSL recipes into a self-contained model file of ours.

A wespeaker model (BUTSpeechFIT/wespeaker_ssl_public, branch hubert: ``model: WavLM_MHFA``; or the author's
Wespeaker_SSL: ``model: WavLM_Base_MHFA``; ``model_args.pooling: MHFA`` or CA-MHFA's ``G_MHFA_Conv2D``) is a
state dict (``avg_model.pt`` or ``model_N.pt``) with the official WavLM tensors under ``model.``, the pooling
back-end under ``back_end.`` and the AAM classifier under ``projection.``, each optionally under
``speaker_extractor.`` (its training wrapper) and ``module.`` (data-parallel). The run's ``config.yaml`` names
the model, the pooling and their arguments.

What is kept:
  * the fine-tuned front-end, from the checkpoint (official names, renamed to torchaudio's); the pre-trained file
    (--pretrained_model_path, default: the config's model_args.model_path) only gives its architecture;
  * the back-end: wespeaker's MHFA is ours (layer weights over the CNN-projected input and every block, the
    same softmaxes, compression, per-head attention over time and output layer); head_nb, compression_dim and
    nOut are read from its tensors and checked against the config;
  * or CA-MHFA (``G_MHFA_Conv2D``, the author's ``MHFA_Group_Conv2D``): our CAMHFA, with head_nb = his group,
    context = his head_nb // group + 1 (read from back_end.att_head.weight [group, 1, context, 128], which
    becomes our att_conv.weight [group, 128, context]; an even context is not supported), no 1/context
    (context_average false), compression and nOut from the tensors, each checked against the config;
  * the classifier, when it fits one of our losses: arc_margin -> aamsoftmax, arc_margin_intertopk_subcenter ->
    aamsoftmax_subcenter (K sub-centres, inter-top-k), add_margin -> amsoftmax; margin (margin_update's
    final_margin) and scale come along. Any other projection (sphere, softmax, ...) is dropped: the model file
    gets a fresh, untrained aamsoftmax head (it only matters to train the model further; embeddings and scores
    do not use it).
  * wespeaker's evaluation protocol as the file's default: the whole-file embedding of the first 20 s, no crops
    (eval_frames 0, max_eval_seconds 20, eval_long_files cut). wespeaker's scoring also subtracts the mean
    embedding of the training set: give --mean_embeddings to the evaluation for that.

Usage:
  python -m tools.import_wespeaker --checkpoint exp/MHFA/models/avg_model.pt --config exp/MHFA/config.yaml \\
      --pretrained_model_path WavLM-Base+.pt --out exp/MHFA.model
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import yaml

from core.cli import run_tool
from core.errors import CheckpointError, ConfigError
from core.options import defaults
from frontend.formats import load_torch_file, name_list, state_mismatch
from frontend.names import wavlm_state_to_torchaudio
from model_files import model_file_fields, save_model_file
from SpeakerNet import SpeakerNet

logger = logging.getLogger(__name__)

# wespeaker model classes whose front-end is an official WavLM under ``model.``, with their back-end under
# ``back_end.`` fed every layer (the CNN-projected input and each block's output) of the first 20 s.
WESPEAKER_MODELS = {
    "WavLM_MHFA": "BUTSpeechFIT/wespeaker_ssl_public (hubert), wespeaker/models/Transformer_WavLM.py",
    "WavLM_Base_MHFA": "JunyiPeng00/Wespeaker_SSL, wespeaker/models/Transformer_WavLM.py",
}
# The wrappers around the model in wespeaker's state dicts, outermost first.
WRAPPER_PREFIXES = ("module.", "speaker_extractor.")
# wespeaker's evaluation: one whole-file embedding of at most 16000 * 20 samples (Transformer_WavLM.forward).
PROTOCOL = {"eval_frames": 0, "max_eval_seconds": 20.0, "eval_long_files": "cut"}


class Pooling(NamedTuple):
    """How one wespeaker pooling becomes one of our back-ends."""
    model: str  # our model plug-in
    tensors: Dict[str, str]  # wespeaker ``back_end.`` name -> our ``encoder.backend.`` name
    options: Callable[[Dict[str, Any], Dict[str, torch.Tensor]], Dict[str, Any]]  # (model_args, back_end) -> ours
    # wespeaker name -> its tensor in our layout (after ``options`` has checked the shapes); others are copied
    convert: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def _agree(model_args: Dict[str, Any], name: str, value: int, tensor: str) -> int:
    """``value`` (read from a tensor's shape), checked against the config's ``model_args[name]`` when given."""
    given = model_args.get(name)
    if given is not None and int(given) != value:
        raise CheckpointError(f"config.yaml has model_args.{name} {given} but the checkpoint's {tensor} is for "
                              f"{value}: the config and the checkpoint come from different runs.")
    return value


def mhfa_options(model_args: Dict[str, Any], back_end: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Our MHFA options from wespeaker's MHFA tensors (its compression is fixed at 128 in code, not config)."""
    head_nb, compression = back_end["att_head.weight"].shape
    n_out = back_end["pooling_fc.weight"].shape[0]
    return {"head_nb": _agree(model_args, "head_nb", head_nb, "back_end.att_head.weight"),
            "compression_dim": _agree(model_args, "compression_dim", compression, "back_end.att_head.weight"),
            "nOut": _agree(model_args, "embed_dim", n_out, "back_end.pooling_fc.weight")}


def camhfa_options(model_args: Dict[str, Any], back_end: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Our CAMHFA options from the author's MHFA_Group_Conv2D tensors: his Conv2d weight [group, 1, group_len + 1,
    128] (group_len = head_nb // group) gives our head_nb (= group), context and compression_dim."""
    weight = back_end["att_head.weight"]
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise CheckpointError(f"back_end.att_head.weight has shape {list(weight.shape)}; G_MHFA_Conv2D's Conv2d "
                              f"weight is [group, 1, head_nb // group + 1, compression].")
    group, _, context, compression = weight.shape
    if context % 2 == 0:
        raise CheckpointError(f"back_end.att_head.weight spans {context} frames (head_nb // group odd): an even "
                              f"kernel shortens the sequence in wespeaker's code and has no CAMHFA counterpart.")
    group = _agree(model_args, "group", group, "back_end.att_head.weight")
    if model_args.get("head_nb") is not None and int(model_args["head_nb"]) // group + 1 != context:
        raise CheckpointError(f"config.yaml has model_args.head_nb {model_args['head_nb']} (group {group}: "
                              f"{int(model_args['head_nb']) // group + 1} frames) but the checkpoint's "
                              f"back_end.att_head.weight spans {context}: the config and the checkpoint come "
                              f"from different runs.")
    n_out = back_end["pooling_fc.weight"].shape[0]
    return {"head_nb": group, "context": context, "context_average": False,
            "compression_dim": _agree(model_args, "compression_dim", compression, "back_end.att_head.weight"),
            "nOut": _agree(model_args, "embed_dim", n_out, "back_end.pooling_fc.weight")}


MHFA_TENSORS = ["weights_k", "weights_v", "cmp_linear_k.weight", "cmp_linear_k.bias", "cmp_linear_v.weight",
                "cmp_linear_v.bias", "att_head.weight", "att_head.bias", "pooling_fc.weight", "pooling_fc.bias"]
# model_args.pooling -> our back-end; a new pooling is one more entry.
POOLINGS: Dict[str, Pooling] = {
    "MHFA": Pooling("MHFA", {name: name for name in MHFA_TENSORS}, mhfa_options),
    "G_MHFA_Conv2D": Pooling("CAMHFA", {**{name: name for name in MHFA_TENSORS if not name.startswith("att_head")},
                                        "att_head.weight": "att_conv.weight"}, camhfa_options,
                             {"att_head.weight": lambda w: w.squeeze(1).permute(0, 2, 1).contiguous()}),
}
# projection_args.project_type -> our loss plug-in (the classifier weight's layout is the same: [classes (x K), nOut])
PROJECTIONS = {"arc_margin": "aamsoftmax", "add_margin": "amsoftmax",
               "arc_margin_intertopk_subcenter": "aamsoftmax_subcenter"}


def read_wespeaker_config(path: str) -> Dict[str, Any]:
    """A wespeaker ``config.yaml`` as a dict; ConfigError for a missing, unreadable or non-mapping file."""
    if not os.path.isfile(path):
        raise ConfigError(f"wespeaker config '{path}' does not exist (the config.yaml of the run's exp_dir).")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"wespeaker config '{path}' is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model_args"), dict):
        raise ConfigError(f"wespeaker config '{path}' has no model_args mapping: not a wespeaker config.yaml.")
    return config


def pooling_of(config: Dict[str, Any], path: str) -> Pooling:
    """The table entry of the config's model and pooling; ConfigError naming an unknown one."""
    model = config.get("model")
    if model not in WESPEAKER_MODELS:
        raise ConfigError(f"wespeaker config '{path}': model {model!r} is not supported; known: "
                          f"{', '.join(WESPEAKER_MODELS)}.")
    pooling = config["model_args"].get("pooling")
    if pooling not in POOLINGS:
        raise ConfigError(f"wespeaker config '{path}': pooling {pooling!r} is not supported; known: "
                          f"{', '.join(POOLINGS)}.")
    return POOLINGS[pooling]


def strip_wrappers(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Names without the ``module.`` / ``speaker_extractor.`` wrappers (each removed where present)."""
    out = {}
    for name, tensor in state.items():
        for prefix in WRAPPER_PREFIXES:
            name = name[len(prefix):] if name.startswith(prefix) else name
        out[name] = tensor
    return out


def read_wespeaker_state(path: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """A wespeaker checkpoint split into its parts: ``{'model': ..., 'back_end': ..., 'projection': ...}``
    (names without the part's prefix). CheckpointError for tensors outside those parts, or no model/back_end."""
    obj = load_torch_file(path)
    state = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path}' is not a wespeaker checkpoint (a state dict of tensors).")
    parts: Dict[str, Dict[str, torch.Tensor]] = {"model": {}, "back_end": {}, "projection": {}}
    extra = []
    for name, tensor in strip_wrappers(state).items():
        head, _, rest = name.partition(".")
        if head in parts and rest:
            parts[head][rest] = tensor
        else:
            extra.append(name)
    if extra:
        raise CheckpointError(f"'{path}' has tensors outside model.*, back_end.* and projection.*: "
                              f"{name_list(extra)}; not a supported wespeaker model.")
    for part in ("model", "back_end"):
        if not parts[part]:
            raise CheckpointError(f"'{path}' has no {part}.* tensors; not a wespeaker SSL + MHFA checkpoint.")
    return parts


def check_backend_names(pooling: Pooling, name: str, back_end: Dict[str, torch.Tensor], path: str) -> None:
    """CheckpointError naming the missing or extra back-end tensors of the pooling."""
    missing = [f"back_end.{n}" for n in pooling.tensors if n not in back_end]
    extra = [f"back_end.{n}" for n in back_end if n not in pooling.tensors]
    if missing or extra:
        raise CheckpointError(f"'{path}': the back_end.* tensors do not fit pooling {name}: missing "
                              f"{name_list(missing)}, unexpected {name_list(extra)}.")


def backend_state(pooling: Pooling, back_end: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The back-end tensors under our names and in our layouts (names and shapes already checked)."""
    return {f"encoder.backend.{ours}": pooling.convert.get(theirs, lambda t: t)(back_end[theirs])
            for theirs, ours in pooling.tensors.items()}


def loss_options(config: Dict[str, Any], projection: Dict[str, torch.Tensor], n_out: int
                 ) -> Tuple[Dict[str, Any], Optional[torch.Tensor]]:
    """Our loss options and classifier weight from wespeaker's projection (weight None: dropped)."""
    args = config.get("projection_args") or {}
    margins = config.get("margin_update") or {}
    options: Dict[str, Any] = {"trainfunc": "aamsoftmax", "margin": float(margins.get("final_margin", 0.2)),
                               "scale": float(args.get("scale", 32.0))}
    kind, weight = PROJECTIONS.get(args.get("project_type")), projection.get("weight")
    fits = weight is not None and set(projection) == {"weight"} and weight.dim() == 2 and weight.shape[1] == n_out
    if kind is None or not fits:
        logger.warning("projection %r (%s) has no counterpart among our losses: dropped; the model file gets an "
                       "untrained aamsoftmax head", args.get("project_type"), sorted(projection))
        options["nClasses"] = int(args.get("num_class") or defaults()["nClasses"])
        return options, None
    rows = weight.shape[0]
    options["trainfunc"] = kind
    if kind == "aamsoftmax_subcenter":
        k = int(args.get("K", 3))
        if rows % k:
            raise CheckpointError(f"projection.weight has {rows} rows, not a multiple of K = {k} sub-centres.")
        lm = bool(args.get("do_lm", False))  # wespeaker turns the inter-top-k penalty off for LMFT
        options.update(subcenters=k, inter_topk=0 if lm else int(args.get("k_top", 5)),
                       inter_margin=float(args.get("mp", 0.06)))
        rows //= k
    if args.get("num_class") is not None and int(args["num_class"]) != rows:
        raise CheckpointError(f"projection.weight is for {rows} classes but config.yaml's projection_args.num_class "
                              f"is {args['num_class']}.")
    options["nClasses"] = rows
    return options, weight


def frontend_state(model: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], pretrained: str,
                   path: str) -> Dict[str, torch.Tensor]:
    """The official WavLM tensors renamed to our front-end's, checked against the pre-trained architecture."""
    converted, unknown = wavlm_state_to_torchaudio(model)
    if unknown:
        raise CheckpointError(f"'{path}': front-end tensors with no place in a WavLM: "
                              f"{name_list(['model.' + n for n in unknown])}.")
    missing, extra, shapes, report = state_mismatch(expected, converted, shown=6)
    if missing or extra or shapes:
        raise CheckpointError(f"'{path}': the front-end does not fit the architecture of --pretrained_model_path "
                              f"'{pretrained}' (torchaudio names: {report}); give the pre-trained model the run "
                              f"started from (or the checkpoint is incomplete).")
    return {f"encoder.frontend.model.{k}": v for k, v in converted.items()}


def import_model(checkpoint: str, config_path: str, pretrained: str, out: str) -> str:
    """Write the self-contained model file ``out`` of a wespeaker checkpoint and its config; returns ``out``."""
    config = read_wespeaker_config(config_path)
    pooling = pooling_of(config, config_path)
    pretrained = pretrained or str(config["model_args"].get("model_path") or "")
    if not pretrained:
        raise ConfigError("--pretrained_model_path is needed (config.yaml names no model_args.model_path).")
    parts = read_wespeaker_state(checkpoint)
    check_backend_names(pooling, config["model_args"]["pooling"], parts["back_end"], checkpoint)
    model_options = pooling.options(config["model_args"], parts["back_end"])
    backend = backend_state(pooling, parts["back_end"])
    losses, weight = loss_options(config, parts["projection"], model_options["nOut"])
    ours = {**defaults(), **model_options, **losses, **PROTOCOL, "model": pooling.model,
            "pretrained_model_path": os.path.abspath(pretrained), "weight_finetuning_reg": 0.0}
    torch.manual_seed(ours["seed"])  # a dropped classifier is initialised reproducibly
    net = SpeakerNet(**ours)
    expected = net.encoder.frontend.model.state_dict()
    state = net.state_dict()
    state.update(frontend_state(parts["model"], expected, pretrained, checkpoint))
    if weight is not None:
        state["loss_fn.weight"] = weight
    state.update(backend)
    _, _, shapes, report = state_mismatch(net.state_dict(), state, shown=6)
    if shapes:
        raise CheckpointError(f"'{checkpoint}' does not fit the front-end of '{pretrained}' and the config's model: "
                              f"{report}; e.g. back_end.weights_k needs one weight per layer (+1 for the input).")
    net.load_state_dict(state, strict=True)
    fields = model_file_fields(net, ours)
    save_model_file({"model": net.state_dict(), **fields,
                     "imported_from": {"format": "wespeaker", "checkpoint": os.path.abspath(checkpoint),
                                       "config": os.path.abspath(config_path), "wespeaker_model": config["model"],
                                       "pooling": config["model_args"]["pooling"],
                                       "classifier": "kept" if weight is not None else "dropped"}}, out)
    logger.info("Imported %s (%s, pooling %s) into %s: %s", checkpoint, config["model"],
                config["model_args"]["pooling"], out,
                ", ".join(f"{k} {ours[k]}" for k in ("model", "head_nb", "context", "compression_dim", "nOut",
                                                     "trainfunc", "nClasses")))
    return out


def import_command(args: argparse.Namespace) -> str:
    out = import_model(args.checkpoint, args.config, args.pretrained_model_path, args.out)
    print(f"model file written to {out}", flush=True)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="wespeaker state dict (avg_model.pt, model_N.pt)")
    parser.add_argument("--config", required=True, help="the run's config.yaml (exp_dir/config.yaml)")
    parser.add_argument("--pretrained_model_path", default="",
                        help="the official WavLM checkpoint the run started from: only its architecture is used "
                             "(default: config.yaml's model_args.model_path)")
    parser.add_argument("--out", required=True, help="the model file to write")
    run_tool(parser, import_command, argv)


if __name__ == "__main__":
    main()
