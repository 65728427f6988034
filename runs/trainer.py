"""The trainer of a :class:`SpeakerNet.SpeakerNet`: optimiser and scheduler plug-ins, mixed precision,
the margin ramp (through the loss plug-in's ``set_margin``, :mod:`loss`) and one epoch's loop, summed up in an
:class:`EpochStats`; saving and resuming its state."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from core.device import autocast_dtype
from core.errors import CheckpointError, ConfigError, TrainingError
from core.logs import progress_options
from core.plugins import get_plugin
from loss import check_loss_plugin
from model_files import load_model_state, model_file_fields, save_model_file
from SpeakerNet import SpeakerNet

logger = logging.getLogger(__name__)
FRONTEND_GROUPS = ("frontend.", "transformer.")  # name prefixes of the front-end's optimizer groups (models.MHFA)


def margin_at(progress: float, final: float, initial: float = 0.0, start: float = 0.0, length: float = 0.0,
              shape: str = "linear") -> float:
    """The AAM margin after ``progress`` epochs of training (a float: updated every iteration).

    ``initial`` until ``start``, ``final`` from ``start + length`` on; in between, with
    u = (progress - start) / length, initial + (final - initial) * r(u) where r(u) = u
    (linear) or, as wespeaker's ``MarginScheduler`` (increase_type 'exp'),
    r(u) = 1 - exp(u * ln(1e-3 / (1 + 1e-6))), which covers 99.9 % of the way at u = 1.
    ``length`` 0 is a fixed margin (``final``), as the original.
    """
    if length <= 0 or progress >= start + length:
        return final
    if progress < start:
        return initial
    u = (progress - start) / length
    ratio = u if shape == "linear" else 1.0 - math.exp(u * math.log(1e-3 / (1.0 + 1e-6)))
    return initial + (final - initial) * ratio


def random_state(dataset: Any = None) -> Dict[str, Any]:
    """Every random stream of this process that training draws from: torch (CPU and CUDA), NumPy's and
    Python's global generators, and the training dataset's own generator (crops, augmentation)."""
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [numpy_state[1].tolist(), int(numpy_state[2])],
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if dataset is not None:
        state["dataset"] = dataset.rng.bit_generator.state
    return state


def set_random_state(state: Dict[str, Any], dataset: Any = None) -> None:
    """Restore what :func:`random_state` returned (the dataset's stream only when ``dataset`` is given)."""
    torch.set_rng_state(state["torch"])
    keys, position = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), position, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if dataset is not None and "dataset" in state:
        dataset.rng.bit_generator.state = state["dataset"]


def frontend_rate(lrs: Dict[str, float]) -> Optional[float]:
    """The largest learning rate of the front-end's groups in ``lrs`` (group name -> rate; the groups named
    ``frontend.*`` / ``transformer.*`` by the model's ``parameter_groups``); None when there is none."""
    rates = [lr for name, lr in lrs.items() if name.startswith(FRONTEND_GROUPS)]
    return max(rates) if rates else None


class StepRecord(NamedTuple):
    """What one optimizer step did (:attr:`ModelTrainer.last_step`; runs.board logs it)."""
    number: int  # optimizer steps since the run began, this one included (ModelTrainer.total_steps)
    loss: float  # mean cross-entropy of the step's batches (NaN when not finite)
    grad_norm: float  # total gradient norm before clipping (inf/NaN on a skipped step)
    skipped: bool  # non-finite gradients: no update
    margin: float
    lrs: Dict[str, float]  # optimizer group name -> the learning rate the step used
    epoch_loss: float  # mean cross-entropy of the epoch's batches so far (those since a resume inside it)
    epoch_acc: float  # their mean accuracy (%)


class EpochStats(NamedTuple):
    """What one epoch of :meth:`ModelTrainer.train_epoch` did."""
    loss: float  # mean loss over the batches of finite loss
    acc: float  # their mean top-1 accuracy, in %
    steps: int  # optimizer steps in the epoch
    utterances: int  # utterances trained on (speakers x nPerSpeaker per batch)
    rate: float  # utterances per second
    margin: float  # the loss plug-in's margin at the end
    skipped: int  # optimizer steps skipped for non-finite gradients


class ModelTrainer:
    """Optimiser, scheduler, precision and the epoch loop for a :class:`SpeakerNet`."""

    def __init__(self, net: SpeakerNet, device: torch.device, optimizer: str, scheduler: str, lr: float,
                 LR_MHFA: float, LR_Transformer: float, LLRD_factor: float, margin: float = 0.2,
                 margin_warmup_epochs: float = 0.0, margin_warmup_start: float = 0.0, margin_initial: float = 0.0,
                 margin_schedule: str = "linear", grad_clip: float = 0.0, grad_accum: int = 1,
                 mixedprec: bool = False, steps_per_epoch: int = 1, world: int = 1, max_bad_steps: int = 20,
                 **config: Any):
        check_loss_plugin(net.loss_fn)  # the margin schedule below sets its margin
        self.model = net.to(device)
        self.device = device
        # Data-parallel: gradients averaged over the processes in backward. Blocks skipped by LayerDrop
        # (decided per process) leave parameters unused in that step.
        self.forward_model = net if world == 1 else torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False,
            find_unused_parameters=getattr(getattr(net.encoder, "frontend", None), "layer_drop", 0.0) > 0)
        groups = net.encoder.parameter_groups(LR_MHFA, LR_Transformer, LLRD_factor,
                                              extra_backend=list(net.loss_fn.parameters()))
        self.optimizer = get_plugin("optimizer", optimizer)(groups, lr=lr, **config)
        self.scheduler, self.lr_step = get_plugin("scheduler", scheduler)(
            self.optimizer, steps_per_epoch=steps_per_epoch, **config)
        self.margin = dict(final=margin, initial=margin_initial, start=margin_warmup_start,
                           length=margin_warmup_epochs, shape=margin_schedule)
        self.grad_clip, self.grad_accum = grad_clip, grad_accum
        self.max_bad_steps, self.bad_in_a_row = max_bad_steps, 0
        self.amp_dtype = autocast_dtype(device) if mixedprec else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=mixedprec and device.type == "cuda")
        self._scheduler_stepped = False  # step_scheduler: the first call may precede any optimizer.step()
        self.last_grad_norm = math.nan  # of the last optimizer_step
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = 0  # optimizer steps since the run began (skipped ones too), kept in checkpoints
        self.last_step: Optional[StepRecord] = None  # the last optimizer step of train_epoch

    def margin_at(self, progress_epochs: float) -> float:
        """The margin after ``progress_epochs`` of training (:func:`margin_at` with this run's options)."""
        return margin_at(progress_epochs, **self.margin)

    def train_epoch(self, loader, epoch: int, verbose: bool = True, start_step: int = 0,
                    resumed: Optional[Dict[str, Any]] = None,
                    after_step: Optional[Callable[[int], None]] = None) -> EpochStats:
        """One pass over ``loader`` (epochs count from 1).

        With ``grad_accum`` k, each optimizer step accumulates the gradients of k consecutive
        batches, each loss divided by k: the mean of k per-batch gradients, which is what k
        data-parallel processes with one batch each average to. Batches left over at the end of
        the epoch (fewer than k) are not used, as data-parallel training drops them. Under
        data-parallel training the gradients are averaged over the processes once per step.

        Resuming inside an epoch (``start_step`` optimizer steps already done): the loader is walked
        through those steps' batches without training (so the data streams advance exactly as they
        did), then the random state ``resumed`` of the interrupted run is restored and training goes
        on. ``after_step(step)`` is called after every optimizer step (1-based, within the epoch), with
        :attr:`last_step` describing that step. The margin of the schedule reaches the loss through its
        ``set_margin`` before every optimizer step.

        A step whose gradients are not finite (after the data-parallel average, so every process
        agrees) is skipped and counted (``skipped``); ``max_bad_steps`` in a row raise TrainingError.

        Returns:
            the epoch's :class:`EpochStats`.
        """
        self.model.train()
        accum = self.grad_accum
        total_ce = total_acc = 0.0
        batches, utterances, skipped, start = 0, 0, 0, time.time()
        steps_per_epoch = len(loader) // accum
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not verbose, leave=False, total=steps_per_epoch * accum,
                   **progress_options())
        for batch, (wav, labels) in enumerate(bar):
            step, micro = divmod(batch, accum)
            if step >= steps_per_epoch:
                break
            if step < start_step:  # done before the interruption: only the data streams move on
                if batch == start_step * accum - 1 and resumed is not None:
                    set_random_state(resumed)
                continue
            if micro == 0:
                self.model.loss_fn.set_margin(self.margin_at(epoch - 1 + step / steps_per_epoch))
                self.optimizer.zero_grad(set_to_none=True)
                step_ce, step_lrs = 0.0, {str(g.get("name", i)): g["lr"]
                                          for i, g in enumerate(self.optimizer.param_groups)}
            wav, labels = wav.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            sync = micro == accum - 1 or self.forward_model is self.model  # all-reduce on the last batch only
            with contextlib.nullcontext() if sync else self.forward_model.no_sync():
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    loss, ce, acc = self.forward_model(wav, labels)
                self.scaler.scale(loss / accum if accum > 1 else loss).backward()
            ce_value = ce.item()
            step_ce += ce_value
            utterances += wav.shape[0] * wav.shape[1]  # [B speakers, nPerSpeaker, S]
            if math.isfinite(ce_value):
                batches += 1
                total_ce += ce_value
                total_acc += acc.item()
            if micro == accum - 1:
                done = self.optimizer_step()
                if not done:
                    skipped += 1
                    self.count_bad_step(epoch, step + 1)
                else:
                    self.bad_in_a_row = 0
                self.total_steps += 1
                self.last_step = StepRecord(self.total_steps, step_ce / accum, self.last_grad_norm, not done,
                                            self.model.loss_fn.margin, step_lrs, total_ce / max(batches, 1),
                                            total_acc / max(batches, 1))
                if after_step is not None:
                    after_step(step + 1)
            bar.set_postfix(loss=f"{total_ce / max(batches, 1):.3f}", acc=f"{total_acc / max(batches, 1):.1f}%",
                            rate=f"{utterances / (time.time() - start):.1f}/s", refresh=False)
        if self.lr_step == "epoch":
            self.step_scheduler()
        if batches == 0 and skipped == 0 and start_step < steps_per_epoch:
            raise ConfigError("The training loader produced no optimizer step: the list has fewer speakers/utterances "
                              "than one batch needs (lower batch_size or nPerSpeaker), or fewer batches than "
                              "grad_accum.")
        batches = max(batches, 1)  # an epoch resumed at its very end trains nothing more
        return EpochStats(loss=total_ce / batches, acc=total_acc / batches, steps=steps_per_epoch,
                          utterances=utterances, rate=utterances / (time.time() - start),
                          margin=self.model.loss_fn.margin, skipped=skipped)

    def count_bad_step(self, epoch: int, step: int) -> None:
        self.bad_in_a_row += 1
        if self.bad_in_a_row <= 3 or self.bad_in_a_row % 100 == 0:
            logger.warning("Epoch %d, step %d: non-finite loss or gradients; the step is skipped (%d in a row).",
                           epoch, step, self.bad_in_a_row)
        if self.max_bad_steps and self.bad_in_a_row >= self.max_bad_steps:
            raise TrainingError(f"{self.bad_in_a_row} optimizer steps in a row had non-finite loss or gradients "
                                f"(the last at epoch {epoch}, step {step}), so the run stops (max_bad_steps "
                                f"{self.max_bad_steps}). Lower the learning rates (LR_MHFA, LR_Transformer), set "
                                f"grad_clip, or look for bad audio (NaN samples) in the training list.")

    def optimizer_step(self) -> bool:
        """Unscale, check the gradients are finite, clip (when ``grad_clip``), step the optimizer and scaler,
        and a per-iteration scheduler. Returns False when the step was skipped (non-finite gradients;
        under fp16 scaling the scaler skips it and lowers its scale)."""
        self.scaler.unscale_(self.optimizer)  # the true gradient, also under fp16 scaling (no-op otherwise)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        self.last_grad_norm = float(norm)  # (one transfer, as the finiteness test already waits for the norm)
        finite = math.isfinite(self.last_grad_norm)
        if finite and self.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norm)
        if finite or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # with inf gradients the scaler skips the step itself
        self.scaler.update()
        if self.lr_step == "iteration":
            self.step_scheduler()
        return finite

    def step_scheduler(self) -> None:
        """Advance the learning-rate schedule by one iteration or epoch, also after a skipped optimizer step:
        the schedules count training iterations and epochs (scheduler/), not successful updates, so the rates
        stay where the documented schedule puts them (and in step with the margin ramp). torch warns about
        ``lr_scheduler.step()`` before any ``optimizer.step()`` when the very first step was skipped
        (non-finite gradients, or the fp16 scaler skipping it); that order is intended here, so exactly that
        warning is silenced, for the first call only (torch checks only the first one)."""
        if self._scheduler_stepped:
            self.scheduler.step()
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before "
                                                      r"`optimizer\.step\(\)`", category=UserWarning)
            self.scheduler.step()
        self._scheduler_stepped = True

    def current_lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)

    def frontend_lr(self) -> Optional[float]:
        """The largest learning rate of the front-end's groups (named ``frontend.*`` / ``transformer.*`` by the
        model's ``parameter_groups``); None when the front-end has no group (it does not train)."""
        return frontend_rate({str(g.get("name", i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)})

    def save(self, path: str, epoch: int, config: Dict[str, Any], step: int = 0,
             random_states: Optional[Any] = None) -> None:
        """A resumable checkpoint: ``epoch`` epochs done, plus ``step`` optimizer steps of the next one;
        ``random_states``: what to resume the random streams with (per process, see runs.train). It is a
        self-contained model file too (:func:`model_files.model_file_fields`)."""
        save_model_file({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                         "epoch": epoch, "step": step, "optimizer_steps": self.total_steps, "random": random_states,
                         **model_file_fields(self.model, config)}, path)

    def resume(self, path: str) -> Tuple[int, int, Optional[Any]]:
        """Restore model, optimiser, scheduler and scaler from our checkpoint; returns (epochs done,
        optimizer steps done in the next epoch, the saved random states or None)."""
        obj = load_model_state(self.model, path)
        for key, target in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
            if key not in obj:
                raise CheckpointError(f"'{path}' holds no {key} state, so it cannot be resumed; "
                                      f"start a new stage from it with initial_model instead.")
            target.load_state_dict(obj[key])
        epoch, step = int(obj["epoch"]), int(obj.get("step", 0))
        # (a checkpoint from before the count was kept: as if every epoch had this run's length)
        self.total_steps = int(obj.get("optimizer_steps", epoch * self.steps_per_epoch + step))
        return epoch, step, obj.get("random")
