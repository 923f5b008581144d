"""Training, as the child process runs it: dataset -> tokenizer -> trainer -> checkpoints in the object store.

Three starts are possible, and the newest state always wins:
- this job wrote checkpoints before (its worker died, or handed the job back): resume from the newest valid one;
- the job continues an already trained model: start from that model's checkpoint, for `max_iters` more steps;
- otherwise train a tokenizer on the dataset and start from scratch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, replace
from typing import Any

from agents.jobs.child import CANCEL, RUN, SUSPEND, JobContext
from agents.jobs.kinds import JobKind, JobSpec, helped_job
from agents.tokenize.job import (
    DatasetSource,
    Stopped,
    announce,
    checked_options,
    load_tokenizer,
    mapped_tokens,
    stored_manifest,
    tokenization_id,
    tokenize,
)
from agents.tokenize.shards import Manifest
from agents.train import checkpoints
from agents.train.ranks import Join, launch, rank_device, rank_names
from events import (
    CheckpointSaved,
    JobCancelled,
    Rejected,
    TrainCompleted,
    TrainProgress,
    TrainStarted,
    ValidationCompleted,
    dataset_text,
)
from infra.objectstore import ObjectNotFound, ObjectStore, artifacts
from model.checkpoint import CorruptCheckpoint, pack_checkpoint
from model.config import ConfigError, resolve_hyperparameters
from model.data import split_tokens
from model.device import pick_device
from model.distributed import World
from model.tokenizers import Tokenizer, tokenizer_from_json
from model.trainer import Callbacks, CheckpointInfo, StepInfo, Trainer, ValInfo

LONG_RUN_S = 3600.0  # a run that will take longer says so in its first progress fact


class TrainSpec(JobSpec):
    """A training job as the train agent accepted it."""

    model_name: str
    dataset_key: str
    tokenizer: str
    tokenizer_options: dict[str, int]
    hyperparameters: dict[str, Any]
    preset: str
    parent_id: str | None = None  # the version this run continues as a new version
    version: int | None = None  # its number among its name's versions
    base_checkpoint: str | None = None  # continuing a trained model: its checkpoint, and the step it is at
    base_step: int = 0
    processes: int = 1  # DDP ranks per host (agents/train/ranks.py)
    hosts: int = 1  # workers whose ranks train together: this job's own and hosts - 1 helpers (TrainJoin)
    source: DatasetSource | None = None  # how to read the dataset (plain text at dataset_key when absent)
    tokenization_id: str | None = None  # a finished tokenization of it with this tokenizer, found at acceptance
    tokens_per_shard: int = 1 << 24


class TrainJoin(TrainSpec):
    """A helper of a training job of several hosts: the job's spec, under the helper's own id, and where to join."""

    join: Join

    def training(self) -> TrainSpec:
        return TrainSpec(**{**self.model_dump(exclude={"join"}), "job_id": helped_job(self.job_id)})


class HostLeft(Exception):
    """The ranks stopped in step for no reason of this host's (a rank elsewhere found its job process gone before the
    signal that ends it arrived): the job's own ranks start again from the checkpoint, with whichever hosts join."""


def read_text(store: ObjectStore, key: str, field: str) -> str:
    try:
        return dataset_text(store.get_bytes(key), field)
    except ObjectNotFound:
        raise Rejected(f"{field}: no dataset at {key}", field) from None


def training_tokens(spec: TrainSpec, job: JobContext, given: Tokenizer | None,
                    announced: bool = False) -> tuple[Tokenizer, Manifest]:
    """The run's tokenizer and the manifest of its shards: a tokenization found (the one the agent chose, or the one
    these settings name) or made now as the job's first step. `given`: the tokenizer a checkpoint brings; a
    tokenization made by another tokenizer does not suit it. `announced`: a tokenization found was announced already
    (by the job's process, before it started its ranks)."""
    source = spec.source or DatasetSource.at(spec.dataset_key)
    options = checked_options(spec.tokenizer, spec.tokenizer_options)
    started = time.monotonic()
    for tid in (spec.tokenization_id, tokenization_id(source, spec.tokenizer, options, None, spec.tokens_per_shard)):
        manifest = stored_manifest(job, source, tid) if tid else None
        if manifest is not None:
            tokenizer = load_tokenizer(job, manifest)
            if given is None or tokenizer.to_json() == given.to_json():
                if not announced:
                    announce(job, source, manifest, tid, None, started, True)
                break
    else:
        try:
            manifest, tid, reused = tokenize(job, source, spec.tokenizer, options, None, spec.tokens_per_shard,
                                             given=given)
        except Stopped:
            raise Rejected("the job was stopped while it tokenized its dataset") from None
        tokenizer = given or load_tokenizer(job, manifest)
        announce(job, source, manifest, tid, None, started, reused)
    return tokenizer, manifest


class _Publishing(Callbacks):
    """Trainer callbacks that write checkpoints and report facts, progress at a bounded rate."""

    def __init__(self, spec: TrainSpec, job: JobContext):
        super().__init__()
        self.job, self.store = job, job.store
        self.model_id = spec.model_id
        self.last_report = 0.0
        self.last_checkpoint: str | None = None
        self.first_step = 0
        self.last_step: StepInfo | None = None
        self.device = "cpu"
        self.on_step = self._on_step
        self.on_validation = self._on_validation
        self.on_checkpoint = self._on_checkpoint
        self.should_stop = job.should_stop

    def _on_step(self, info: StepInfo) -> None:
        self.last_step = info
        now = time.monotonic()
        settings = self.job.settings
        done = info.step - self.first_step
        first = done == 1  # always reported: its time is the first estimate of the whole run's
        if not first and info.step % settings.progress_every_steps and info.step != info.max_iters \
                and now - self.last_report < settings.progress_every_s:
            return
        self.last_report = now
        remaining = info.max_iters - info.step
        eta = info.elapsed_s / done * remaining if done > 0 else None
        warning = None
        if first and eta is not None and eta > LONG_RUN_S:
            warning = (f"this run will take about {eta / 3600:.1f} h on {self.device} ({remaining} more steps at "
                       f"{info.elapsed_s:.1f} s each); the cpu-baby preset trains in about a minute on a CPU")
        self._progress(info, eta, warning)

    def _progress(self, info: StepInfo, eta: float | None, warning: str | None) -> None:
        self.job.emit(TrainProgress, step=info.step, max_iters=info.max_iters, loss=_finite(info.loss),
                      learning_rate=info.lr, tokens_per_s=info.tokens_per_s, elapsed_s=info.elapsed_s,
                      eta_s=eta, progress=min(1.0, info.step / info.max_iters), warning=warning)

    def _waiting(self, why: str) -> None:
        """The progress says the job waits for the object store."""
        if self.last_step is not None:
            self._progress(self.last_step, None, why)

    def _on_validation(self, info: ValInfo) -> None:
        self.job.emit(ValidationCompleted, step=info.step, val_loss=_finite(info.val_loss),
                      best_val_loss=_finite(info.best_val_loss))

    def _on_checkpoint(self, info: CheckpointInfo) -> None:
        if self.job.orphaned:
            return  # the job belongs to another worker now
        data = pack_checkpoint(info.state)
        key = artifacts.checkpoint_key(self.model_id, info.step)
        what = f"the checkpoint of step {info.step}"
        self.job.stored(lambda: self.store.put_bytes(key, data), what, self._waiting)  # atomic: all or none
        best = None
        if info.is_best:
            best = artifacts.best_key(self.model_id)
            self.job.stored(lambda: self.store.put_bytes(best, data), what, self._waiting)
        pruned = self.job.stored(lambda: checkpoints.prune_checkpoints(self.store, self.model_id), what,
                                 self._waiting)
        self.last_checkpoint = key
        self.job.emit(CheckpointSaved, model_id=self.model_id, step=info.step, key=key,
                      sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), is_best=info.is_best,
                      best_key=best, pruned=pruned)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise Rejected(f"training diverged (loss {value}); try a lower learning_rate", "hyperparameters.learning_rate")
    return value


def _starting_state(spec: TrainSpec, store: ObjectStore) -> tuple[dict | None, str | None]:
    """(checkpoint state to start from, its key when it is this job's own)."""
    own = checkpoints.load_latest_valid(store, spec.model_id, min_step=spec.base_step + 1)
    if own is not None:
        return own[1], own[0]
    if spec.base_checkpoint:
        try:
            return checkpoints.load_checkpoint(store, spec.base_checkpoint), None
        except (ObjectNotFound, CorruptCheckpoint) as error:
            raise Rejected(f"model_id: the model's checkpoint cannot be read ({error})", "model_id") from None
    return None, None


def run_training(spec: TrainSpec, job: JobContext) -> None:
    world = World.current()
    if spec.processes * spec.hosts > 1 and world.size == 1:  # the child of a run of several processes: start them
        state, _ = job.stored(lambda: _starting_state(spec, job.store), "reading the checkpoints")
        training_tokens(spec, job, tokenizer_from_json(state["tokenizer"]) if state is not None else None)
        launch(run_training, spec, job)  # each rank finds the tokens made here (all would make them at once)
        return
    store = job.store
    try:
        model_config, train_config = resolve_hyperparameters(spec.hyperparameters)
    except ConfigError as error:
        raise Rejected(f"hyperparameters.{error.field}: {error.message}", f"hyperparameters.{error.field}") from None
    state, own_key = job.stored(lambda: _starting_state(spec, store), "reading the checkpoints")
    given: Tokenizer | None = None
    if state is not None:
        given = tokenizer_from_json(state["tokenizer"])
        if own_key is None:  # continue an earlier version: its shape, a new number of steps
            train_config = replace(train_config, max_iters=spec.base_step + train_config.max_iters)
            if "optimizers" in state:  # the new version's best is the best of its own checkpoints
                state = {**state, "best_val_loss": None, "bad_evals": 0}
        else:
            train_config = None  # the checkpoint's own training config wins
    # The ranks of a run of several processes find the tokens their job's process made and announced.
    tokenizer, manifest = training_tokens(spec, job, given, announced=world.size > 1)
    tokens = mapped_tokens(job, manifest, "dataset")
    model_id = spec.model_id
    callbacks = _Publishing(spec, job)
    # A run taken over after its last step (its worker died, or the database was down, before the job could end)
    # trains no further: it ends with the checkpoint the earlier run left.
    callbacks.last_checkpoint = own_key
    val_fraction = (train_config.val_fraction if train_config is not None
                    else state["train_config"]["val_fraction"])  # type: ignore[index]
    train_ids, val_ids = split_tokens(tokens, val_fraction)
    device = rank_device() if world.size > 1 else pick_device()
    try:
        trainer = Trainer(model_config.with_vocab(tokenizer.vocab_size) if state is None else None, train_config,
                          train_ids, val_ids, callbacks=callbacks, device=device, resume=state,
                          tokenizer=tokenizer, world=world)
    except ConfigError as error:
        size = f"{len(tokens)} tokens"
        if error.field == "dataset":
            raise Rejected(f"dataset: the text is too short to train on ({error.message}); it holds {size}",
                           "dataset") from None
        raise Rejected(f"{error.field}: {error.message}; the dataset holds {size}", error.field) from None
    callbacks.first_step, callbacks.device = trainer.step, str(trainer.device)
    config = {"model": asdict(trainer.mcfg), "train": asdict(trainer.cfg)}
    ranks = rank_names(trainer.device) if world.size > 1 else []
    if world.main:  # the ranks hold the same; rank 0 writes
        job.stored(lambda: store.put_bytes(artifacts.tokenizer_key(model_id), tokenizer.to_json().encode(),
                                           "application/json"), "writing the tokenizer")
        job.stored(lambda: store.put_bytes(artifacts.config_key(model_id), json.dumps(config).encode(),
                                           "application/json"), "writing the configuration")
    job.emit(TrainStarted, model_id=model_id, attempt=job.attempt, worker=job.worker,
                  resumed_from_step=trainer.step, max_iters=trainer.cfg.max_iters,
                  num_parameters=trainer.model.num_parameters(), device=str(trainer.device), config=config,
                  tokenizer_key=artifacts.tokenizer_key(model_id), vocab_size=tokenizer.vocab_size,
                  world_size=world.size, ranks=ranks)
    result = trainer.run()
    if job.orphaned:
        return
    if result.cancelled and job.mode == RUN:  # a rank on another host stopped the run
        if job.lead:
            raise HostLeft(f"a host of the run stopped at step {result.step}; starting again from its checkpoint")
        return  # the job's own run ended it (cancelled, or handed back): this helper has served
    if result.cancelled and job.mode == SUSPEND:
        job.suspended()
        return
    if result.cancelled and job.mode == CANCEL:
        job.emit(JobCancelled, reason="cancelled by request", step=result.step)
        return
    if not world.main:  # rank 0 ends the job
        return
    if callbacks.last_checkpoint is None:
        raise Rejected("training ended without writing a checkpoint")
    best = artifacts.best_key(model_id)
    train_loss = result.train_loss if result.step > callbacks.first_step or state is None else state["train_loss"]
    job.emit(TrainCompleted, model_id=model_id, final_step=result.step, train_loss=_maybe(train_loss),
                  val_loss=result.val_loss, best_val_loss=result.best_val_loss,
                  perplexity=math.exp(result.val_loss) if result.val_loss is not None else None,
                  wall_s=result.wall_s, tokens_per_s=result.tokens_per_s,
                  num_parameters=trainer.model.num_parameters(), checkpoint_key=callbacks.last_checkpoint,
                  best_checkpoint_key=best if job.stored(lambda: store.exists(best), "reading the checkpoints")
                  else None,
                  stopped_early=result.stopped_early)


def _maybe(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def join_training(spec: TrainJoin, job: JobContext) -> None:
    """A helper's child: lend this worker's ranks to the job's run on another worker."""
    launch(run_training, spec.training(), job, spec.join)


TRAIN = JobKind("train", TrainSpec, run_training)
TRAIN_JOIN = JobKind("train-join", TrainJoin, join_training, helps="train")
