"""The one table of options: every YAML key and command-line option, its type, default and help.

Each option is defined here once; :mod:`core.config` reads YAML files and the command line
against this table, ``--help`` lists it by section, and ``result/config.yaml`` records it.
Keys keep the original voxceleb_trainer / MHFA names where they exist.

What an option is to the option ladder (:mod:`core.config`) and the embedding cache is declared per
option in :data:`ROLES`, never implied by its section: ``model`` (a self-contained model file fixes it),
``protocol`` (a model file's value is the default), ``cache`` (part of the embedding-cache key) and
``threshold`` (a threshold file sets it). Each option reads them as ``Option.roles``; :func:`with_role`
lists them.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

NONE_WORDS = ("", "None", "none", "null")


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
    return "" if value is None or str(value) in NONE_WORDS else str(value)


def optional_float(value: Any) -> Optional[float]:
    """A number, or None for YAML null / 'None' (= not given)."""
    return None if value is None or str(value) in NONE_WORDS else float(value)


def optional_int(value: Any) -> Optional[int]:
    """An integer, or None for YAML null / 'None' (= not given)."""
    return None if value is None or str(value) in NONE_WORDS else int(value)


def path_list(value: Any) -> List[str]:
    """One or several paths: a YAML list, a comma-separated string, or the words of ``--opt A B C``."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [p.strip() for item in items for p in optional_str(item).split(",") if p.strip()]


path_list.nargs = "+"  # type: ignore[attr-defined]  # add_options: --test_list A B C


def one_of(*choices: str) -> Callable[[Any], str]:
    """Parser of an option that takes one of ``choices`` (argparse lists them in its error)."""
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text
    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def lora_targets(value: Any) -> List[str]:
    """``lora_targets``: a YAML list or comma-separated string of query, key, value, output (none: the
    default, query and value); an unknown name is a ValueError listing the choices."""
    items = value if isinstance(value, (list, tuple)) else [value]
    names = [t.strip() for item in items if item is not None for t in str(item).split(",") if t.strip()]
    wrong = [t for t in names if t not in LORA_TARGETS]
    if wrong:
        raise ValueError(f"unknown LoRA target(s) {wrong}: choose from {', '.join(LORA_TARGETS)}")
    return list(dict.fromkeys(names)) or list(DEFAULT_LORA_TARGETS)


lora_targets.nargs = "+"  # type: ignore[attr-defined]  # --lora_targets query value


LORA_TARGETS = ("query", "key", "value", "output")  # frontend/lora.py maps them to each front-end's modules
DEFAULT_LORA_TARGETS = ("query", "value")
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")  # optimizer_impl: see optimizer/__init__.py
LONG_FILE_MODES = ("cut", "chunks")  # eval_long_files: see evaluation.dataset.whole_file_pieces
SCORE_NORMS = ("none", "asnorm", "snorm")


class Option(NamedTuple):
    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    section: str
    roles: FrozenSet[str] = frozenset()  # of ROLE_NAMES, as ROLES declares them


_S, _F, _I, _B = optional_str, float, int, parse_bool
_OPTIONS: Dict[str, List[tuple]] = {
    "training data": [
        ("max_frames", _I, 200, "training crop length in 10 ms frames (samples = max_frames*160+240)"),
        ("batch_size", _I, 120, "batch size (number of speakers per batch)"),
        ("max_seg_per_spk", _I, 500, "maximum utterances per speaker per epoch"),
        ("nPerSpeaker", _I, 1, "utterances per speaker per batch"),
        ("sampler", one_of("speaker", "utterance"), "speaker",
         "speaker: the original's (per epoch at most max_seg_per_spk utterances per speaker, never one speaker "
         "twice in a batch); utterance: wespeaker's (every utterance once per epoch in random order, speakers may "
         "repeat in a batch; needs nPerSpeaker 1, ignores max_seg_per_spk)"),
        ("nDataLoaderThread", optional_int, None, "data loader worker processes (default: the CPUs this process may "
                                                   "use, at most 4; 0: load in the main process)"),
        ("augment", _B, False, "augment training audio with MUSAN noise and RIR reverberation"),
        ("aug_prob", optional_float, None, "probability that an utterance is augmented, then by one of reverb, "
                                           "music, babble, noise, babble+music (wespeaker: 0.6); default: the "
                                           "original's uniform choice of those five and clean"),
        ("augment_mode", one_of("original", "wespeaker"), "original",
         "original: one of the original's kinds (reverb, music, babble of 3-8 files, noise, babble+music) from "
         "musan_path in 5 s chunks (tools.split_musan); wespeaker: reverb or one additive MUSAN recording (50/50) "
         "from raw MUSAN (<category>/<subset>/<recording>.wav) at SNR noise 0-15, speech 10-30, music 5-15 dB, "
         "the result rescaled to peak 1 (aug_prob default 0.6)"),
        ("speed_perturb", _B, False, "speed perturbation: each utterance at speed 0.9, 1.0 or 1.1 as a different "
                                     "speaker (wespeaker); nClasses becomes 3 x the speakers"),
        ("check_data", _B, True, "check every listed file (exists, readable audio, at least min_audio_seconds) "
                                 "before training and evaluation; results are cached"),
        ("drop_bad_data", _B, False, "training: leave out the entries the data check finds unusable (reported with "
                                     "their count) instead of stopping"),
        ("min_audio_seconds", _F, 0.1, "data check: shorter files are unusable (the CNN needs 0.025 s; VoxCeleb "
                                       "utterances are >= 4 s, CN-Celeb's can be under 1 s)"),
        ("data_check_cache", _S, "", "file of the data check's per-file results (default: "
                                     "<save_path>/data_check.json)"),
        ("seed", _I, 20211202, "random seed"),
    ],
    "training": [
        ("test_interval", _I, 1, "evaluate and save a checkpoint every N epochs"),
        ("max_epoch", _I, 15, "number of epochs"),
        ("trainfunc", _S, "aamsoftmax", "loss plug-in in loss/ (aamsoftmax, aamsoftmax_subcenter, amsoftmax, "
                                        "softmax)"),
        ("optimizer", _S, "adamw", "optimizer plug-in in optimizer/ (adam, adamw, sgd)"),
        ("scheduler", _S, "steplr", "scheduler plug-in in scheduler/ (steplr, coslr, cyclr, exponential; "
                                    "cyclr also cycles SGD momentum / Adam beta1 between 0.9 and 0.8)"),
        ("lr", _F, 0.001, "optimizer default learning rate; every parameter group sets its own "
                          "(LR_MHFA, LR_Transformer), so like the original this is unused by MHFA models"),
        ("lr_decay", _F, 0.95, "learning-rate decay factor every test_interval epochs (steplr)"),
        ("final_lr_ratio", _F, 0.05, "exponential: each group's learning rate falls to this fraction of its own "
                                     "over the run (wespeaker: 0.1 -> 5e-3)"),
        ("warmup_epochs", _F, 0.0, "exponential: learning-rate warm-up epochs (per iteration)"),
        ("warm_from_zero", _B, True, "exponential: the warm-up starts from 0 (else from the full learning rate)"),
        ("weight_decay", optional_float, None, "optimizer weight decay; default: the optimizer's own (AdamW 0.01, "
                                               "Adam and SGD 0), as the original"),
        ("nesterov", _B, False, "sgd: Nesterov momentum (wespeaker's recipes use it)"),
        ("optimizer_impl", one_of(*OPTIMIZER_IMPLS), "auto",
         "how the optimizer updates: auto (torch's fused kernel, one pass over the parameters; same maths to "
         "float rounding), foreach, or loop (torch's per-tensor default, as the original)"),
        ("grad_accum", _I, 1, "batches accumulated per optimizer step (k batches = the update of k data-parallel "
                              "processes; the paper's global batch on fewer GPUs)"),
        ("global_batch", _I, 0, "batch_size summed over all processes and accumulated batches: the batch of one "
                                "optimizer step. When set, training derives grad_accum = global_batch / "
                                "(batch_size x processes) (processes: 1, or the data-parallel world size), so a "
                                "recipe keeps its update on any process count; it must divide exactly. grad_accum "
                                "left at its default 1 is replaced; any other grad_accum must equal the derived "
                                "value, else it is an error naming both (a value written by hand is never silently "
                                "ignored). 0 = off: grad_accum as given"),
        ("grad_clip", _F, 0.0, "clip the gradient norm to this value before each step (wespeaker: 5); 0 = off"),
        ("max_bad_steps", _I, 20, "an optimizer step whose gradients are not finite (NaN/inf loss) is skipped and "
                                  "counted; after this many in a row the run stops, naming the last good checkpoint; "
                                  "0 = never stop"),
        ("margin", _F, 0.2, "AAM-softmax margin m"),
        ("scale", _F, 30.0, "AAM-softmax scale s"),
        ("margin_warmup_epochs", _F, 0.0, "ramp the margin from margin_initial to `margin` over this many epochs "
                                          "(per iteration); 0 = fixed margin as the original"),
        ("margin_warmup_start", _F, 0.0, "epochs of training before the margin ramp starts (wespeaker's "
                                         "increase_start_epoch - 1)"),
        ("margin_initial", _F, 0.0, "the margin before and at the start of the ramp"),
        ("margin_schedule", one_of("linear", "exp"), "linear", "shape of the ramp: linear, or wespeaker's "
                                                               "exponential approach"),
        ("subcenters", _I, 3, "aamsoftmax_subcenter: sub-centres per speaker (K)"),
        ("inter_topk", _I, 5, "aamsoftmax_subcenter: hardest non-target classes penalised (0 = off; "
                              "wespeaker v4 keeps 5 for LMFT too)"),
        ("inter_margin", _F, 0.06, "aamsoftmax_subcenter: margin m' of those classes at margin 0.2 (scaled with "
                                   "the margin)"),
        ("nClasses", _I, 5994, "number of training speakers"),
        ("save_every_steps", _I, 0, "also write a resumable checkpoint every N optimizer steps inside an epoch "
                                    "(model<epochs done>.step<N>.model; removed by the next epoch's); 0 = off"),
        ("initial_model", _S, "", "start from this model file (e.g. the previous stage's); evaluation: the model"),
        ("initial_model_from", _S, "", "start from the newest checkpoint of this save_path (the previous stage's), "
                                       "when initial_model is not set"),
        ("initial_model_average", _I, 1, "with initial_model_from: start from the average of its newest N "
                                         "checkpoints (wespeaker's num_avg: 2 between its stages)"),
        ("save_path", _S, "exps/exp1", "experiment folder (model/ and result/ are made inside)"),
        ("tensorboard", _B, False, "also write TensorBoard event files: per step loss, learning rates, margin, "
                                   "gradient norm, skipped steps; per epoch accuracy, EERs, MinDCFs (needs the "
                                   "tensorboard package)"),
        ("tensorboard_dir", _S, "", "folder of the TensorBoard event files (default: <save_path>/tensorboard)"),
    ],
    "fine-tuning": [
        ("weight_finetuning_reg", _F, 0.01, "weight of the regulariser toward the pre-trained weights"),
        ("reg_loss", one_of("original", "plain"), "original",
         "'original': CE/sg(CE) + reg*r/(sg(r)+1e-5) as the paper ran (also without r); 'plain': CE + reg*r"),
        ("LLRD_factor", _F, 1.0, "layer-wise learning-rate decay: block i gets LR_Transformer*LLRD_factor^i"),
        ("LR_Transformer", _F, 2e-5, "learning rate of the transformer blocks"),
        ("LR_MHFA", _F, 5e-3, "learning rate of the MHFA back-end and the loss"),
        ("freeze_ssl", _B, False, "freeze the whole SSL front-end: eval mode, no_grad, no backward, no optimizer "
                                  "groups (only MHFA and the loss train)"),
        ("freeze_cnn", _B, True, "freeze the CNN feature encoder, feature projection and positional conv (the "
                                 "original never updates them; w2v-BERT: its feature projection); false trains "
                                 "them at LR_Transformer"),
        ("feature_grad_mult", _F, 1.0, "fairseq's feature_grad_mult: scale of the gradient into a trainable CNN "
                                       "(needs freeze_cnn: false); 0: the CNN alone fixed (under no_grad), the "
                                       "feature projection and positional conv train; w2v-BERT has no CNN (keep 1)"),
        ("layer_grad_mult", _F, 1.0, "wespeaker's feature_grad_mult: scale of the gradient from the back-end into "
                                     "every SSL layer output (wespeaker joint fine-tuning: 0.1)"),
        ("layer_drop", optional_float, None, "probability of skipping each transformer block in training "
                                             "(LayerDrop); default: the checkpoint's own encoder_layerdrop "
                                             "(0.05 in WavLM Base+/Large, 0.1 in w2v-BERT 2.0), as the original"),
        ("grad_checkpointing", _B, False, "recompute transformer blocks in backward to save memory "
                                          "(joint fine-tuning of Large models on long crops)"),
        ("lora_rank", _I, 0, "LoRA: rank r of the low-rank adapters added to the front-end's attention projections "
                             "(0 = off); the front-end's own weights then stay frozen and only the adapters train, "
                             "at LR_Transformer with the layer-wise decay; model files hold the adapters, evaluation "
                             "and export merge them. A stage with lora_rank 0 starting from a LoRA model file merges "
                             "its adapters and fine-tunes every weight"),
        ("lora_alpha", optional_float, None, "LoRA: alpha; the adapters' output is scaled by alpha / lora_rank "
                                             "(default: 2 x lora_rank, scaling 2, as wespeaker's w2v-BERT: r 64, "
                                             "alpha 128)"),
        ("lora_dropout", _F, 0.0, "LoRA: dropout on the adapters' input (WavLM's merged query/key/value projection "
                                  "is adapted in weight space and needs 0)"),
        ("lora_targets", lora_targets, list(DEFAULT_LORA_TARGETS),
         "LoRA: the projections adapted in every block, of query, key, value, output (a YAML list or a "
         "comma-separated string): the attention query and value projections by default"),
        ("compile_frontend", _B, False, "torch.compile the transformer blocks (inductor; shapes dynamic): the first "
                                        "batches wait minutes for the compiler, later steps are faster; the same "
                                        "outputs to float rounding"),
    ],
    "frontend": [
        ("pretrained_model_path", _S, "", "pre-trained SSL checkpoint: official WavLM .pt, fairseq HuBERT / "
                                          "wav2vec 2.0 .pt, or a Hugging Face model folder, wav2vec2-bert "
                                          "(w2v-BERT 2.0) included (format detected)"),
        ("trust_checkpoint", _B, False, "allow arbitrary unpickling of checkpoints (only for trusted files; "
                                        "legacy fairseq files with an argparse Namespace need it)"),
        ("allow_partial_checkpoint", _B, False, "load a pre-trained checkpoint even if some of its encoder "
                                                "tensors are unused or missing (they are logged by name)"),
        ("normalize_input", _B, False, "normalise each waveform before the SSL model (off, as the original)"),
        ("frontend_kernels", one_of("auto", "reference"), "auto",
         "auto: the front-end's fast kernels where no gradient flows (CNN as GEMMs, folded first block, FFT "
         "positional convolution, reduced-precision weight copies, streaming layer sums); reference: torchaudio's "
         "modules as they are everywhere (the same embeddings to float rounding, slower): to check whether a fast "
         "kernel causes a result. w2v-BERT has no CNN nor positional conv: both run transformers' modules, auto "
         "adding the weight copies and layer sums"),
    ],
    "model": [
        ("model", _S, "MHFA", "model plug-in in models/ (MHFA; CAMHFA, the context-aware MHFA; Baseline.Spk_Encoder "
                              "is an alias of MHFA)"),
        ("nOut", _I, 256, "embedding size"),
        ("head_nb", optional_int, None, "MHFA: number of attention heads, 32 when not set; CAMHFA: number of query "
                                        "groups G, 64 when not set (the first author's group: 64). A model file "
                                        "records the number used"),
        ("compression_dim", _I, 128, "MHFA compression dimension"),
        ("context", _I, 5, "CAMHFA: frames L each query group looks at (odd; 1 = MHFA's attention without bias); "
                           "5 is the first author's (head_nb 256 / group 64 + 1 in his G_MHFA_Conv2D)"),
        ("context_average", _B, False, "CAMHFA: divide each attention logit by L, as the paper's equation (1/L); "
                                       "false: no factor, as the first author's code, which his trained models need. "
                                       "Model files written before this option load with true (they were trained "
                                       "with it)"),
    ],
    "extraction": [
        ("eval_frames", _I, 300, "evaluation crop length in frames; 0 uses the whole file only"),
        ("num_eval", _I, 5, "number of evenly spaced evaluation crops per file"),
        ("max_eval_seconds", _F, 43.75, "cap on the whole-file embedding input (43.75 s = the original's "
                                        "700,000 samples, set for GPU memory); longer files are logged"),
        ("eval_long_files", one_of(*LONG_FILE_MODES), "cut",
         "files longer than max_eval_seconds: 'cut' to the cap (the original) or 'chunks': split into "
         "near-equal pieces within the cap, embedding = length-weighted mean of the piece embeddings"),
        ("eval_batch_seconds", _F, 60.0, "most audio (seconds) per forward pass in extraction"),
        ("eval_autocast", _B, False, "extraction under bfloat16 (CPU) / float16 (CUDA) autocast"),
    ],
    "evaluation data and outputs": [
        ("test_list", path_list, [], "trial list(s): 'label enroll.wav test.wav' per line; several as "
                                     "--test_list A B C, A,B,C or a YAML list"),
        ("test_path", _S, "", "folder the trial list paths are relative to, or a Kaldi data folder whose wav.scp maps "
                              "the trial keys to files"),
        ("embeddings", _S, "", "score from this embeddings .npz (no model, no audio)"),
        ("save_embeddings", _S, "", "save the extracted embeddings (.npz)"),
        ("score_file", _S, "", "write 'label enroll test score' per trial here (plus <score_file>.det.png and "
                               ".threshold.json); with several lists <stem>.<list name><ext>"),
        ("det_plot", one_of("separate", "combined"), "separate",
         "with a score_file and several trial lists: a DET plot per list (<its score file>.det.png), or all lists "
         "in one figure (<score_file>.det.png)"),
        ("eval_checkpoints", _I, 4, "evaluation without --initial_model on its command line: how many of the newest "
                                    "checkpoints of save_path to evaluate (the original's 4)"),
        ("embedding_cache", _B, True, "cache the embeddings of initial_model and reuse them when the same model, "
                                      "files and embedding options come again"),
        ("embedding_cache_dir", _S, "", "folder of the embedding cache (default: <save_path>/embedding_cache; "
                                        "never next to the model file)"),
    ],
    "scoring": [
        ("score_norm", one_of(*SCORE_NORMS), "none", "score normalisation with a cohort (needs cohort_embeddings)"),
        ("top_n", _I, 300, "AS-norm: cohort size per side"),
        ("cohort_embeddings", _S, "", "cohort .npz (one row per cohort speaker; python -m tools.make_cohort)"),
        ("mean_embeddings", _S, "", "subtract the mean whole-file embedding of this .npz from every embedding "
                                    "(and the cohort) before scoring"),
        ("mean_list", _S, "", "compute that mean only over the files of this list (last field of each line)"),
        ("qmf_list", _S, "", "QMF calibration: fit a logistic regression on score + quality measures on this "
                             "labelled trial list; scores become llrs"),
        ("threshold", optional_float, None, "decision threshold: accept when score >= it (evaluation: also "
                                            "report the actual DCF there)"),
        ("dcf_p_target", _F, 0.05, "prior of a target trial (QMF calibration prior)"),
        ("dcf_c_miss", _F, 1.0, "cost of a miss"),
        ("dcf_c_fa", _F, 1.0, "cost of a false alarm"),
    ],
    "training paths": [
        ("train_list", _S, "", "training list: 'speaker_id relative/path.wav' per line, or a Kaldi data folder "
                               "(wav.scp + utt2spk)"),
        ("train_path", _S, "", "folder the training list paths are relative to"),
        ("musan_path", _S, "", "MUSAN split in 5 s chunks as the original: <noise|speech|music>/<subset>/<recording>/"
                               "<NNNNN>.wav (python -m tools.split_musan makes it from raw MUSAN)"),
        ("rir_path", _S, "", "RIR folder (<room type>/<room>/<file>.wav, e.g. RIRS_NOISES/simulated_rirs) or an "
                             "index of one (python -m tools.index_rirs)"),
    ],
    "runtime": [
        ("device", _S, "auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'"),
        ("port", _S, "7888", "distributed without torchrun/SLURM: the port the processes meet on (MASTER_PORT in "
                             "the environment wins)"),
        ("distributed", _B, False, "data-parallel processes: one per visible GPU (NCCL), or nproc_per_node CPU "
                                   "processes (gloo); under torchrun/SLURM the launcher's processes. Training "
                                   "(batch_size is per process), the eval command and tools.embed (each process "
                                   "embeds a share of the files, rank 0 scores and writes)"),
        ("nproc_per_node", _I, 2, "distributed without GPUs: the number of CPU processes"),
        ("dist_timeout", _F, 30.0, "distributed: minutes a collective may wait for the other processes"),
        ("mixedprec", _B, False, "mixed precision (float16 autocast + grad scaling on CUDA, bfloat16 on CPU)"),
        ("eval", _B, False, "evaluate only"),
    ],
}

# The roles of an option, besides being a setting (core/config.py states the ladder they take part in):
MODEL = "model"  # a self-contained model file fixes it: its value is final, another value given is an error
PROTOCOL = "protocol"  # a model file's value (the protocol it was trained with) replaces the default
CACHE = "cache"  # it can change the embeddings of a model file: part of the embedding-cache key
THRESHOLD = "threshold"  # a threshold file sets it (tools.verify --threshold_file): the settings its threshold
# was measured with, and the threshold itself (the file's eer_threshold)
ROLE_NAMES = (MODEL, PROTOCOL, CACHE, THRESHOLD)
# Every option of the sections where roles occur (DECIDED_SECTIONS) is listed, () for none, so a new option there
# is decided here (tests/core/test_config.py checks it); an option of another section that has a role is listed too.
DECIDED_SECTIONS = ("frontend", "model", "extraction", "scoring")
ROLES: Dict[str, Tuple[str, ...]] = {
    # front-end: what the encoder reads and how it computes
    "pretrained_model_path": (CACHE,),
    "trust_checkpoint": (CACHE,),
    "allow_partial_checkpoint": (CACHE,),
    "normalize_input": (MODEL, CACHE),
    "frontend_kernels": (CACHE,),
    # model: every option shapes the model file's tensors or its embeddings
    "model": (MODEL, CACHE),
    "nOut": (MODEL, CACHE),
    "head_nb": (MODEL, CACHE),
    "compression_dim": (MODEL, CACHE),
    "context": (MODEL, CACHE),
    "context_average": (MODEL, CACHE),
    # LoRA adapters: their tensors are in the model file, their scaling changes its embeddings
    "lora_rank": (MODEL, CACHE),
    "lora_alpha": (MODEL, CACHE),
    "lora_dropout": (MODEL,),
    "lora_targets": (MODEL, CACHE),
    # training options that shape the file's loss tensors (no embedding changes with them)
    "trainfunc": (MODEL,),
    "nClasses": (MODEL,),
    "subcenters": (MODEL,),
    # extraction protocol
    "eval_frames": (PROTOCOL, CACHE, THRESHOLD),
    "num_eval": (PROTOCOL, CACHE, THRESHOLD),
    "max_eval_seconds": (PROTOCOL, CACHE, THRESHOLD),
    "eval_long_files": (PROTOCOL, CACHE, THRESHOLD),
    "eval_batch_seconds": (PROTOCOL, CACHE, THRESHOLD),
    "eval_autocast": (PROTOCOL, CACHE, THRESHOLD),
    # scoring
    "score_norm": (THRESHOLD,),
    "top_n": (THRESHOLD,),
    "cohort_embeddings": (THRESHOLD,),
    "mean_embeddings": (THRESHOLD,),
    "mean_list": (THRESHOLD,),
    "qmf_list": (THRESHOLD,),
    "threshold": (THRESHOLD,),
    "dcf_p_target": (THRESHOLD,),
    "dcf_c_miss": (THRESHOLD,),
    "dcf_c_fa": (THRESHOLD,),
}
OPTIONS: List[Option] = [Option(*row, section, frozenset(ROLES.get(row[0], ())))
                         for section, rows in _OPTIONS.items() for row in rows]
OPTION_BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}


def defaults() -> Dict[str, Any]:
    """Every option at its default (lists copied, so callers may change them)."""
    return {o.name: list(o.default) if isinstance(o.default, list) else o.default for o in OPTIONS}


def in_sections(sections: Sequence[str]) -> List[str]:
    """Names of the options of ``sections``, in table order."""
    return [o.name for o in OPTIONS if o.section in sections]


def with_role(role: str) -> List[str]:
    """Names of the options that :data:`ROLES` gives ``role``, in table order."""
    return [o.name for o in OPTIONS if role in o.roles]
