"""Reading SSL checkpoints in their official formats.

Kept apart from the model code (`frontend/ssl_frontend.py`): this module only
knows file layouts, configuration names and parameter names.

Here: safe reading of torch files, model configurations (fairseq-style and Hugging Face
names) and the official WavLM format (``{'cfg': {...}, 'model': state}``, as
``WavLM-Base+.pt`` / ``WavLM-Large.pt`` from microsoft/unilm). Parameter names and their
renaming: ``frontend/names.py``; fairseq HuBERT / wav2vec 2.0 files: ``frontend/fairseq.py``;
Hugging Face folders: ``frontend/hf.py``; telling them apart: ``frontend/detect.py``.
Writers of these formats (for the demo and the tests) are in ``synthetic/checkpoints.py``.
"""
from __future__ import annotations

import ast
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from core.errors import CheckpointError

logger = logging.getLogger(__name__)

ConvLayers = List[Tuple[int, int, int]]

ACCEPTED_FORMATS = (
    "(a) an official WavLM checkpoint, a torch file holding {'cfg': {...}, 'model': state_dict} "
    "(WavLM-Base+.pt, WavLM-Large.pt from microsoft/unilm); (b) a fairseq HuBERT or wav2vec 2.0 checkpoint, "
    "{'cfg': {'model': {...}}, 'model': state_dict} or legacy {'args': Namespace, 'model': state_dict}, "
    "pre-trained or fine-tuned (w2v_encoder.w2v_model.* keys); (c) a Hugging Face model folder "
    "(config.json with model_type wavlm, hubert or wav2vec2, plus model.safetensors or pytorch_model.bin; "
    "or wav2vec2-bert, w2v-BERT 2.0, with its preprocessor_config.json too)"
)



def load_torch_file(path: str, trust_checkpoint: bool = False) -> Any:
    """Load a torch file safely (``weights_only=True``) with errors that name the file.

    Args:
        path: file to read.
        trust_checkpoint: allow arbitrary unpickling (only for files you trust;
            fairseq files carry argparse/omegaconf objects).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist (or is not a file). "
                              f"Check the path in your YAML/command line.")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as err:  # torch raises many types here (pickle, zip, EOF, runtime)
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"Checkpoint '{path}' needs arbitrary unpickling ({msg}); fairseq files carry argparse/omegaconf "
                f"objects. A checkpoint is code: set `trust_checkpoint: true` only if you trust where this "
                f"file came from.") from err
        raise CheckpointError(
            f"Could not read checkpoint '{path}': {msg}. The file may be truncated or not a torch "
            f"checkpoint. Accepted: {ACCEPTED_FORMATS}.") from err


def name_list(names: List[str], shown: int = 8) -> str:
    """The first ``shown`` names, '...' if there are more, and the count: "['a', 'b'] ... (12)"."""
    return f"{names[:shown]}{' ...' if len(names) > shown else ''} ({len(names)})"


def state_mismatch(expected: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor], shown: int = 8
                   ) -> Tuple[List[str], List[str], List[str], str]:
    """Compare a state dict with a model's: (missing, unexpected, mis-shaped, one-line report)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in given.items() if k in expected and v.shape != expected[k].shape]

    report = (f"missing {name_list(missing, shown)}, unexpected {name_list(unexpected, shown)}, "
              f"shape mismatches {shapes[:shown]}")
    return missing, unexpected, shapes, report


def load_checked(model: torch.nn.Module, state: Dict[str, torch.Tensor], what: str, allow_partial: bool,
                 unused: Sequence[str] = ()) -> None:
    """Load ``state`` into ``model`` (an SSL model of the architecture its checkpoint describes) strictly: every
    tensor must find its place (``unused``: the checkpoint's encoder tensors already known to have none) and every
    model tensor must be there. With ``allow_partial`` (YAML ``allow_partial_checkpoint``) unused tensors are
    dropped and missing ones keep their random initialisation, both logged by name; shape mismatches always fail,
    with a CheckpointError naming ``what`` (the checkpoint, for messages) and the tensors."""
    expected = model.state_dict()
    missing, unexpected, mis_shaped, _ = state_mismatch(expected, state)
    unused = [*unused, *unexpected]
    report = (f"unused tensors {name_list(unused)}, missing tensors {name_list(missing)}, "
              f"shape mismatches {mis_shaped[:8]}")
    if mis_shaped or (not allow_partial and (unused or missing)):
        raise CheckpointError(
            f"{what} does not match the architecture its own configuration describes: {report}. The file may be "
            f"damaged, its configuration edited, or it holds another model; set `allow_partial_checkpoint: true` to "
            f"load it anyway (unused tensors are dropped, missing ones keep random values; shape mismatches cannot "
            f"be loaded).")
    if unused or missing:
        logger.warning("Partial checkpoint %s loaded (allow_partial_checkpoint): %s", what, report)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=not allow_partial)


# ----------------------------------------------------------------------------- conv layer spec

def parse_conv_layers(spec: str) -> ConvLayers:
    """Parse the official ``conv_feature_layers`` expression without ``eval``.

    The official value is a Python expression such as
    ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``. Only list/tuple
    literals of ints, ``+`` (concatenation) and ``*`` (repetition) are allowed.

    Returns:
        list of (channels, kernel, stride).
    """
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(n) for n in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = value(ast.parse(spec, mode="eval").body)
        if not (isinstance(layers, list) and layers and all(
                isinstance(t, tuple) and len(t) == 3 and all(isinstance(i, int) for i in t) for t in layers)):
            raise ValueError("expected a non-empty list of (channels, kernel, stride) tuples")
    except (SyntaxError, ValueError, TypeError) as err:
        raise CheckpointError(f"Cannot parse conv_feature_layers {spec!r}: {err}") from err
    return [tuple(t) for t in layers]


# ----------------------------------------------------------------------------- configs

# Scalar torchaudio ``wav2vec2_model`` arguments: (argument, type, (key, default) in
# fairseq-style cfgs (WavLM, wav2vec 2.0, HuBERT), (key, default) in Hugging Face
# ``config.json``). A default of None marks an architecture key that must be present.
ENCODER_OPTIONS: List[Tuple[str, Callable[[Any], Any], Tuple[str, Any], Tuple[str, Any]]] = [
    ("extractor_conv_bias", bool, ("conv_bias", False), ("conv_bias", False)),
    ("encoder_embed_dim", int, ("encoder_embed_dim", None), ("hidden_size", None)),
    ("encoder_projection_dropout", float, ("dropout_input", 0.0), ("feat_proj_dropout", 0.0)),
    ("encoder_pos_conv_kernel", int, ("conv_pos", 128), ("num_conv_pos_embeddings", None)),
    ("encoder_pos_conv_groups", int, ("conv_pos_groups", 16), ("num_conv_pos_embedding_groups", None)),
    ("encoder_num_layers", int, ("encoder_layers", None), ("num_hidden_layers", None)),
    ("encoder_num_heads", int, ("encoder_attention_heads", None), ("num_attention_heads", None)),
    ("encoder_attention_dropout", float, ("attention_dropout", 0.1), ("attention_dropout", 0.0)),
    ("encoder_ff_interm_features", int, ("encoder_ffn_embed_dim", None), ("intermediate_size", None)),
    ("encoder_ff_interm_dropout", float, ("activation_dropout", 0.0), ("activation_dropout", 0.0)),
    ("encoder_dropout", float, ("dropout", 0.1), ("hidden_dropout", 0.0)),
    ("encoder_layer_norm_first", bool, ("layer_norm_first", False), ("do_stable_layer_norm", False)),
    ("encoder_layer_drop", float, ("encoder_layerdrop", 0.0), ("layerdrop", 0.0)),
]
FAIRSEQ_COLUMN, HF_COLUMN = 0, 1


def config_reader(cfg: Dict[str, Any], missing: Callable[[str], str]) -> Callable[..., Any]:
    """``get(key, default=None)`` over ``cfg``: a missing or null key gives ``default``, or,
    without one, a CheckpointError with the message ``missing(key)``."""
    def get(key: str, default: Any = None) -> Any:
        if cfg.get(key) is not None:
            return cfg[key]
        if default is None:
            raise CheckpointError(missing(key))
        return default
    return get


def encoder_options(get: Callable[..., Any], column: int) -> Dict[str, Any]:
    """The scalar arguments of ENCODER_OPTIONS, read with ``get`` from the fairseq or HF column."""
    return {name: cast(get(*keys[column])) for name, cast, *keys in ENCODER_OPTIONS}


def fairseq_style_cfg_to_torchaudio(cfg: Dict[str, Any], source: str = "WavLM cfg") -> Dict[str, Any]:
    """Map fairseq-style model options (shared by WavLM, wav2vec 2.0 and HuBERT) to
    ``torchaudio.models.wav2vec2_model`` arguments (without ``aux_num_out``).

    Architecture keys are required; dropout-like keys default to fairseq's defaults.
    """
    get = config_reader(cfg, lambda key: f"{source} lacks the key '{key}' (found keys: {sorted(cfg)})")
    mode = get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise CheckpointError(f"{source} extractor_mode={mode!r}; expected 'default' or 'layer_norm'")
    if get("activation_fn", "gelu") != "gelu":
        raise CheckpointError(f"{source} activation_fn={cfg['activation_fn']!r}; only 'gelu' is supported")
    if get("layer_type", "transformer") != "transformer" or int(get("pos_conv_depth", 1)) != 1:
        raise CheckpointError(f"{source} describes a conformer or multi-layer positional convolution "
                              f"(layer_type={cfg.get('layer_type')!r}, pos_conv_depth={cfg.get('pos_conv_depth')!r}); "
                              f"only the transformer with one positional convolution is supported")
    return dict(extractor_mode="group_norm" if mode == "default" else "layer_norm",
                extractor_conv_layer_config=parse_conv_layers(get("conv_feature_layers")),
                **encoder_options(get, FAIRSEQ_COLUMN))


def wavlm_cfg_to_torchaudio(cfg: Dict[str, Any], source: str = "WavLM cfg") -> Dict[str, Any]:
    """Map an official WavLM ``cfg`` dict to ``torchaudio.models.wavlm_model`` arguments."""
    if not cfg.get("relative_position_embedding", True) or not cfg.get("gru_rel_pos", True):
        raise CheckpointError(f"{source}: only WavLM with gated relative position embedding "
                              f"(relative_position_embedding and gru_rel_pos true) is supported, as released")
    return dict(fairseq_style_cfg_to_torchaudio(cfg, source),
                encoder_num_buckets=int(cfg.get("num_buckets", 320)),
                encoder_max_distance=int(cfg.get("max_distance", 800)))


def wavlm_parts(obj: Any) -> Optional[Tuple[Dict[str, Any], Dict[str, torch.Tensor]]]:
    """(cfg dict, state) of the content of an official WavLM file, or None if it is not one."""
    cfg = obj.get("cfg") if isinstance(obj, dict) else None
    if not ((isinstance(cfg, dict) or hasattr(cfg, "__dict__")) and isinstance(obj.get("model"), dict)):
        return None
    return (cfg if isinstance(cfg, dict) else dict(vars(cfg))), obj["model"]  # some exports keep a config object


def read_wavlm_checkpoint(path: str, trust_checkpoint: bool = False) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Read an official WavLM file and return (official cfg dict, official state dict)."""
    obj = load_torch_file(path, trust_checkpoint)
    parts = wavlm_parts(obj)
    if parts is None:
        found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"'{path}' is not a supported SSL checkpoint (top-level content: {found}). "
                              f"Accepted: {ACCEPTED_FORMATS}.")
    return parts
