"""One training run: check inputs, build data, model and trainer, resume, then per epoch train, save,
evaluate and log one line.

Writes ``<save_path>/model/model%09d.model`` checkpoints, ``<save_path>/result/scores.txt`` (one line
per epoch) and ``<save_path>/result/config.yaml`` (the resolved configuration). Running the same
configuration again resumes from the newest checkpoint in ``save_path``.
"""
from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from core.audio import quiet_conversions
from core.config import describe_config, loader_workers, require_paths, resolve_grad_accum, save_config
from core.distributed import Context, all_gather, barrier
from core.errors import ConfigError, Interrupted, ToolkitError, TrainingError
from core.interrupt import StopRequest
from core.logs import EPOCH_LOGGER, setup_logging
from dataprep.check import check_training_list, enforce
from dataprep.lists import Entry, read_training_entries
from DatasetLoader import SAMPLERS, TrainDataset, collate_groups, worker_init
from evaluation.metrics import format_result
from evaluation.pipeline import check_trial_files, evaluate, evaluation_paths
from evaluation.trials import list_paths
from model_files import find_checkpoints, find_step_checkpoints, load_averaged_model_state, step_checkpoint_name
from runs.board import TrainingBoard, board_folder, summary_writer_class
from runs.curves import plot_run
from runs.trainer import EpochStats, ModelTrainer, StepRecord, frontend_rate, random_state, set_random_state
from SpeakerNet import SpeakerNet

logger = logging.getLogger(__name__)
# The evaluation every test_interval epochs scores the model being trained and writes no files.
# Its trial files were checked once before training (check_inputs).
EPOCH_EVALUATION = {"embeddings": "", "save_embeddings": "", "score_file": "", "check_data": False}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def seed_models(config: Dict[str, Any]) -> List[str]:
    """The model files a fresh run starts from (their average when several): ``initial_model``, else the newest
    ``initial_model_average`` checkpoints of the previous stage's save_path ``initial_model_from``, else none."""
    if config["initial_model"] or not config["initial_model_from"]:
        return [config["initial_model"]] if config["initial_model"] else []
    found = find_checkpoints(os.path.join(config["initial_model_from"], "model"))
    wanted = config["initial_model_average"]
    if not found:
        raise ConfigError(f"initial_model_from '{config['initial_model_from']}' holds no checkpoint "
                          f"(model/model*.model): train that stage first, or set initial_model.")
    if len(found) < wanted:
        raise ConfigError(f"initial_model_from '{config['initial_model_from']}' holds {len(found)} checkpoint(s) "
                          f"(model/model*.model) but initial_model_average is {wanted}: train that stage first, "
                          f"lower initial_model_average, or set initial_model.")
    return [path for _, path in found[-wanted:]]


def check_inputs(config: Dict[str, Any], fresh: bool, context: Context) -> None:
    """Every path the run will read, checked before anything is loaded: training data, augmentation
    folders, the evaluation inputs of each test_interval, and initial_model when a ``fresh`` run
    (no checkpoint in save_path) uses it."""
    require_paths(config, ["pretrained_model_path", "train_list", "train_path"]
                  + (["musan_path", "rir_path"] if config["augment"] else []))
    if config["test_list"]:
        evaluation_paths({**config, **EPOCH_EVALUATION}, reads_model_file=False)  # the model being trained
        if config["check_data"] and context.main:
            check_trial_files(config, list_paths(config["test_list"]))
    if config["initial_model"] and fresh:
        require_paths(config, ["initial_model"])
    if config["tensorboard"]:
        summary_writer_class()  # a missing tensorboard package stops the run here, not after an epoch


def checked_entries(config: Dict[str, Any], context: Context) -> Tuple[List[Entry], Optional[List[bool]]]:
    """The training list's entries and, when checking data, the keep mask of the data check (rank 0 probes and
    caches, the others then read the cache): stops on unusable entries unless drop_bad_data."""
    entries = read_training_entries(config["train_list"], config["train_path"])
    if not config["check_data"]:
        return entries, None
    report = check_training_list(config, entries) if context.main else None
    barrier(context)
    keep = enforce(report if context.main else check_training_list(config, entries),
                   f"Training list '{config['train_list']}'", config["drop_bad_data"])
    quiet_conversions()  # reported above with their counts
    return entries, keep


def make_loader(config: Dict[str, Any], context: Context) -> torch.utils.data.DataLoader:
    """The training loader; data-parallel, each process gets its share of every epoch and its own
    random crops and augmentation."""
    entries, keep = checked_entries(config, context)
    dataset = TrainDataset(**config, entries=entries, keep=keep)
    if dataset.num_classes != config["nClasses"]:
        times = " x 3 speeds (speed_perturb)" if config["speed_perturb"] else ""
        raise ConfigError(f"nClasses is {config['nClasses']} but '{config['train_list']}' has "
                          f"{len(dataset.speakers)} speakers{times}; set nClasses: {dataset.num_classes}.")
    if context.world > 1:
        dataset.reseed(context.rank)
    sampler = SAMPLERS[config["sampler"]](dataset.labels, **config, num_replicas=context.world, rank=context.rank)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config["batch_size"], sampler=sampler, collate_fn=collate_groups,
        num_workers=loader_workers(config), worker_init_fn=worker_init, drop_last=True,
        pin_memory=torch.cuda.is_available(), persistent_workers=False)
    logger.info("Data: %d files, %d speakers, %d batches of %d per epoch (%s sampler, %s augmentation)",
                len(dataset), len(dataset.speakers), len(loader), config["batch_size"], config["sampler"],
                config["augment_mode"] if config["augment"] else "no")
    return loader


class Start(NamedTuple):
    """Where training (re)starts: the epoch to run, optimizer steps of it already done, and this
    process's random states to resume with (None: a fresh start, or states that do not apply)."""
    epoch: int
    step: int
    random: Optional[Dict[str, Any]]


def resume_points(model_dir: str) -> List[Tuple[int, int, str]]:
    """(epochs done, steps done in the next epoch, path) of every checkpoint, oldest first."""
    return sorted([(epoch, 0, path) for epoch, path in find_checkpoints(model_dir)] + find_step_checkpoints(model_dir))


def start_epoch(trainer: ModelTrainer, config: Dict[str, Any], points: List[Tuple[int, int, str]],
                context: Context, seeds: Sequence[str] = ()) -> Start:
    """Resume from the newest of ``points`` (:func:`resume_points`: an epoch's checkpoint, or a step's
    inside an epoch), else start from the average of ``seeds`` (:func:`seed_models`; none: from scratch)."""
    if points:
        if config["initial_model"]:
            logger.warning("save_path '%s' already holds checkpoints: resuming that run; initial_model '%s' only "
                           "seeds a run that starts fresh. Give a new stage its own save_path.",
                           config["save_path"], config["initial_model"])
        epoch, step, states = trainer.resume(points[-1][2])
        logger.info("Resumed from %s (epoch %d done%s)", points[-1][2], epoch,
                    f", {step} steps of epoch {epoch + 1}" if step else "")
        if states is not None and len(states) != context.world:
            logger.warning("The checkpoint was written by %d process(es), this run has %d: the random streams "
                           "start afresh, so the run will not repeat the interrupted one exactly.", len(states),
                           context.world)
        mine = states[context.rank] if states is not None and len(states) == context.world else None
        return Start(epoch + 1, step, mine)
    if seeds:
        load_averaged_model_state(trainer.model, seeds)
        logger.info("Initial model %s loaded (a new stage starts at epoch 1)",
                    seeds[0] if len(seeds) == 1 else f"the average of {', '.join(seeds)}")
    return Start(1, 0, None)


def epoch_line(epoch: int, lr: float, stats: EpochStats, result: Optional[Dict[str, Any]],
               lr_frontend: Optional[float] = None) -> str:
    """The one-line record of an epoch (several trial lists stay on the same line), read back by
    :mod:`runs.curves`: ``LR`` is the largest learning rate, ``LR_Transformer`` the front-end's largest when it
    trains."""
    frontend = "" if lr_frontend is None else f", LR_Transformer {lr_frontend:g}"
    line = (f"Epoch {epoch:d}, TAcc {stats.acc:2.2f}, TLOSS {stats.loss:f}, LR {lr:g}{frontend}, "
            f"margin {stats.margin:.3f}, {stats.rate:.1f} utt/s")
    if stats.skipped:
        line += f", {stats.skipped} steps skipped (non-finite)"
    return line + (f", {format_result(result, list_separator=' | ')}" if result else "")


def step_line(epoch: int, step: int, steps: int, record: StepRecord) -> str:
    """The record of a step checkpoint inside an epoch, for result/scores.txt (:mod:`runs.curves` reads it): the
    epoch's loss and accuracy so far, the step's learning rates (as :func:`epoch_line`) and margin."""
    frontend = frontend_rate(record.lrs)
    return (f"Epoch {epoch:d} step {step:d}/{steps:d}, TAcc {record.epoch_acc:2.2f}, TLOSS {record.epoch_loss:f}, "
            f"LR {max(record.lrs.values()):g}{'' if frontend is None else f', LR_Transformer {frontend:g}'}, "
            f"margin {record.margin:.3f}")


def train(config: Dict[str, Any], context: Context) -> Optional[Dict[str, Any]]:
    """The whole training run in this process (rank ``context.rank`` of ``context.world``); returns
    the last evaluation result (None if never evaluated, and on ranks other than 0)."""
    device = context.device
    model_dir = os.path.join(config["save_path"], "model")
    result_dir = os.path.join(config["save_path"], "result")
    points = resume_points(model_dir)
    # global_batch: grad_accum for this run's process count, before the schedules count steps per epoch
    config = {**config, "grad_accum": resolve_grad_accum(config, context.world)}
    seeds: List[str] = []
    if not points:  # a fresh run: its seed model(s), checked with the other inputs
        seeds = seed_models(config)
        if len(seeds) == 1:
            config = {**config, "initial_model": seeds[0]}
    check_inputs(config, fresh=not points, context=context)
    os.makedirs(model_dir, exist_ok=True)
    setup_logging(os.path.join(result_dir, "scores.txt"), main=context.main, rank=context.rank)
    if context.main:
        save_config(config, os.path.join(result_dir, "config.yaml"))
    logger.info(describe_config(config, os.path.join(result_dir, "config.yaml")))
    logger.info("Device: %s; torch %s; %d process(es), batch_size %d each, grad_accum %d: global batch %d%s", device,
                torch.__version__, context.world, config["batch_size"], config["grad_accum"],
                context.world * config["batch_size"] * config["grad_accum"],
                " (global_batch; grad_accum derived)" if config["global_batch"] else "")
    seed_everything(config["seed"])

    loader = make_loader(config, context)  # checks the list against nClasses before the checkpoint is loaded
    net = SpeakerNet(**config)
    trainer = ModelTrainer(net, **{**config, "device": device, "world": context.world,
                                   "steps_per_epoch": len(loader) // config["grad_accum"]})
    if context.world > 1:
        torch.manual_seed(config["seed"] + context.rank)  # same model everywhere; own LayerDrop and workers' seeds
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    logger.info("Model: %d parameters, %d trainable; optimizer groups %s", sum(p.numel() for p in net.parameters()),
                n_train, [(g.get("name"), g["lr"]) for g in trainer.optimizer.param_groups])
    start = start_epoch(trainer, config, points, context, seeds)
    if start.epoch > config["max_epoch"]:
        logger.warning("Nothing to train: save_path '%s' is already at epoch %d of max_epoch %d (raise max_epoch "
                       "to continue, or use a new save_path for a new stage).", config["save_path"], start.epoch - 1,
                       config["max_epoch"])
    board = None
    if config["tensorboard"] and context.main:
        board = TrainingBoard(board_folder(config), trainer.total_steps + 1)
        logger.info("TensorBoard event files: %s (tensorboard --logdir %s)", board_folder(config), board_folder(config))
    try:
        with StopRequest() as stop:
            return run_epochs(config, context, trainer, loader, start, stop, board)
    finally:
        if board is not None:
            board.close()


CURVES_EVERY = 30.0  # seconds: the least time between two redraws of result/training.png, but the last one


class CurveDrawer:
    """Redraws ``<save_path>/result/training.png`` from the lines of scores.txt so far, after an epoch (or a step
    checkpoint) once ``CURVES_EVERY`` seconds have passed since the last drawing, and always when ``last`` (the
    run's last epoch, a stop). An epoch of real training takes minutes, so each one is drawn; epochs of a few
    seconds (the demo, the tests) would spend a third of their time drawing (about 0.4 s a picture). A picture that
    cannot be drawn is a warning, never the end of a training run."""

    def __init__(self, save_path: str):
        self.save_path, self.drawn = save_path, -math.inf

    def __call__(self, last: bool = False) -> None:
        if not last and time.monotonic() - self.drawn < CURVES_EVERY:
            return
        try:
            plot_run(self.save_path)
        except (ToolkitError, OSError, ValueError) as err:
            logger.warning("Could not draw %s/result/training.png (%s); training goes on.", self.save_path, err)
        self.drawn = time.monotonic()


def agreed_signal(signum: Optional[int], context: Context) -> int:
    """The stop signal any process received (0: none); data-parallel processes agree on it every step."""
    if context.world == 1:
        return signum or 0
    flag = torch.tensor([signum or 0], device=context.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


class StepCheckpoints:
    """What :func:`run_epochs` does after every optimizer step (``train_epoch``'s ``after_step``): after step
    ``step`` (1-based) of the epoch that :meth:`begin_epoch` set, a step checkpoint every ``save_every_steps``
    steps (none at the epoch's last step: the epoch's own checkpoint follows), and when any process received a stop
    signal (agreed by all), a step checkpoint then Interrupted. A step checkpoint holds every process's random
    states at the start of the epoch and now, to resume from that point exactly."""

    def __init__(self, config: Dict[str, Any], context: Context, trainer: ModelTrainer,
                 loader: torch.utils.data.DataLoader, stop: StopRequest, model_dir: str):
        self.config, self.context, self.trainer, self.loader, self.stop = config, context, trainer, loader, stop
        self.model_dir = model_dir
        self.epoch, self.epoch_start = 0, {}
        self.curves = CurveDrawer(os.path.dirname(model_dir))  # <save_path>/model -> save_path

    def begin_epoch(self, epoch: int, epoch_start: Dict[str, Any]) -> None:
        """Epoch ``epoch`` (from 1) starts, with the random states ``epoch_start`` (:func:`random_state`)."""
        self.epoch, self.epoch_start = epoch, epoch_start

    def __call__(self, step: int) -> None:
        config, context, epoch = self.config, self.context, self.epoch
        signum = agreed_signal(self.stop.signum, context)
        periodic = config["save_every_steps"] and step % config["save_every_steps"] == 0 \
            and step < len(self.loader) // config["grad_accum"]
        if not (periodic or signum):
            return
        path = os.path.join(self.model_dir, step_checkpoint_name(epoch - 1, step))
        states = all_gather({"start": self.epoch_start, "now": random_state(self.loader.dataset)}, context)
        if context.main:
            self.trainer.save(path, epoch - 1, config, step=step, random_states=states)
            logging.getLogger(EPOCH_LOGGER).info(step_line(epoch, step, len(self.loader) // config["grad_accum"],
                                                           self.trainer.last_step))
            self.curves(last=bool(signum))
        if signum:
            barrier(context)
            raise Interrupted(f"Stopped by {signal.Signals(signum).name} at epoch {epoch}, step {step}: the "
                              f"checkpoint {path} holds this point; run the same command again to resume.", signum)


def run_epochs(config: Dict[str, Any], context: Context, trainer: ModelTrainer, loader: torch.utils.data.DataLoader,
               start: Start, stop: StopRequest, board: Optional[TrainingBoard] = None) -> Optional[Dict[str, Any]]:
    """The epochs from ``start`` to max_epoch: train, save, evaluate, log (and ``board``: TensorBoard, per step and
    per epoch); a stop request ends the run at the next step boundary with a step checkpoint (Interrupted)."""
    device, dataset = context.device, loader.dataset
    model_dir = os.path.join(config["save_path"], "model")
    net, epochs, result = trainer.model, logging.getLogger(EPOCH_LOGGER), None
    step_checkpoints = StepCheckpoints(config, context, trainer, loader, stop, model_dir)
    curves = step_checkpoints.curves  # one clock for both

    def after_step(step: int) -> None:
        if board is not None:
            board.log_step(trainer.last_step)
        step_checkpoints(step)

    for epoch in range(start.epoch, config["max_epoch"] + 1):
        if start.random is not None:  # the streams as they were at the start of this epoch (or at its end)
            set_random_state(start.random["start"] if start.step else start.random["now"], dataset)
        step_checkpoints.begin_epoch(epoch, random_state(dataset))
        loader.sampler.set_epoch(epoch)
        lr, lr_frontend = trainer.current_lr(), trainer.frontend_lr()
        try:
            stats = trainer.train_epoch(loader, epoch, verbose=context.main, start_step=start.step,
                                        resumed=start.random["now"] if start.random is not None and start.step
                                        else None, after_step=after_step)
        except TrainingError as err:
            points = resume_points(model_dir)
            raise TrainingError(f"{err} The last good checkpoint is "
                                f"{points[-1][2] if points else 'none (no checkpoint was written yet)'}.") from None
        start = Start(epoch + 1, 0, None)  # the resume point is used up: later epochs start afresh
        result = None
        if epoch % config["test_interval"] == 0 or epoch == config["max_epoch"]:
            states = all_gather({"now": random_state(dataset)}, context)
            if context.main:
                trainer.save(os.path.join(model_dir, f"model{epoch:09d}.model"), epoch, config, random_states=states)
                for _, _, path in find_step_checkpoints(model_dir):  # superseded by this epoch's checkpoint
                    os.remove(path)
            if config["test_list"]:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # training's streams
                    result = evaluate({**config, **EPOCH_EVALUATION}, device, encoder=net.encoder,  # stay untouched
                                      context=context)
            barrier(context)  # the checkpoint is complete before any process goes on
        epochs.info(epoch_line(epoch, lr, stats, result, lr_frontend))  # rank 0: console and result/scores.txt
        if board is not None:
            board.log_epoch(trainer.total_steps, stats.acc, stats.loss, result)
        if context.main:
            curves(last=epoch == config["max_epoch"])
    return result
