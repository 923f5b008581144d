"""Commands: what somebody asks the system to do. Each lives on its own request topic.

Anyone with a Kafka producer may send these as JSON; fields not given take the defaults below.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from events.fields import (
    AliasName,
    DatasetRef,
    Identifier,
    Message,
    ModelName,
    ModelRef,
    new_id,
    utc_now,
)
from events.sampling import Sampling
from events.sweeps import EarlyStopping, ParameterSpace

TokenizerKind = Literal["char", "word", "bpe"]
# A sweep's id: short enough that its trials' job ids (`{id}-t{index}`) are identifiers too.
SweepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,55}$")]
FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
IMPORT_FILES = ("config.json", "model.safetensors", "tokenizer.json")  # what a model directory to import holds


class Command(Message):
    kind: ClassVar[str]  # the kind of job it asks for: "train", "evaluate", "generate"; "cancel" for a cancel

    owner: str | None = Field(default=None, description="Tenant that sent it (set by the gateway from the API key).")
    requested_at: AwareDatetime = Field(default_factory=utc_now)


class TrainRequested(Command):
    """Train a model: every run is a new version of `model_name` (the first of a new name, or one continued from
    `parent_id`'s latest checkpoint)."""

    kind: ClassVar[str] = "train"
    type: Literal["TrainRequested"] = "TrainRequested"
    job_id: Identifier = Field(default_factory=new_id)
    model_name: ModelName
    model_id: Identifier | None = Field(default=None, description=(
        "The id of the model version this run makes (the gateway chooses it; derived from the job id when absent). "
        "An id that names an existing version is read as `parent_id`: the run continues it as a new version."))
    parent_id: Identifier | None = Field(default=None, description=(
        "Continue training this version from its latest checkpoint: the run becomes a new version of its name, "
        "with this one as its parent."))
    description: str = Field(default="", max_length=2000)
    dataset: DatasetRef
    tokenizer: TokenizerKind = "char"
    tokenizer_options: dict[str, int] = Field(
        default_factory=dict, description="For `word`: max_vocab, min_frequency. For `bpe`: vocab_size."
    )
    hyperparameters: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict,
        description="A `preset` name and overrides, in either naming style (`max_iters` or `MAX_ITERS`).",
    )
    processes: int = Field(default=1, ge=1, le=64, description=(
        "Training processes (DDP ranks) on the worker that runs the job, one device each when there are several: "
        "the global batch (batch_size x grad_accum) stays the same and is split over them."))
    hosts: int = Field(default=1, ge=1, le=64, description=(
        "Workers (machines) the job trains on, each with `processes` ranks: the worker that claims the job hosts the "
        "rendezvous and offers the job to others, which join it (TrainRendezvous); the world is processes x hosts."))


class EvaluateRequested(Command):
    """Evaluate a trained model: held-out perplexity and generation statistics over prompts."""

    kind: ClassVar[str] = "evaluate"
    type: Literal["EvaluateRequested"] = "EvaluateRequested"
    job_id: Identifier = Field(default_factory=new_id)
    model_id: Identifier | None = None
    model_name: ModelRef | None = None
    held_out: DatasetRef | None = Field(default=None, description="Text the model did not train on.")
    prompts: list[Annotated[str, StringConstraints(max_length=4000)]] = Field(default_factory=list, max_length=64)
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    seed: int | None = 0

    @model_validator(mode="after")
    def _names_a_model(self) -> EvaluateRequested:
        if self.model_id is None and self.model_name is None:
            raise ValueError("give `model_id` or `model_name`")
        return self


class GenerateRequested(Sampling, Command):
    """Generate text from a trained model; tokens are published as they are produced. Its facts carry `job_id` equal
    to `request_id`; the text is in GenerationCompleted's `completions[].text`."""

    kind: ClassVar[str] = "generate"
    type: Literal["GenerateRequested"] = "GenerateRequested"
    request_id: Identifier = Field(default_factory=new_id)
    model_id: Identifier | None = None
    model_name: ModelRef | None = None
    prompt: str = Field(default="", max_length=100_000)
    max_tokens: int = Field(default=64, ge=1, le=8192, description="New tokens, not counting the prompt.")
    stream: bool = Field(default=True, description="Publish TokensGenerated events as tokens are produced.")

    @model_validator(mode="after")
    def _names_a_model(self) -> GenerateRequested:
        if self.model_id is None and self.model_name is None:
            raise ValueError("give `model_id` or `model_name`")
        return self

    @property
    def job_id(self) -> str:
        return self.request_id


class ExportRequested(Command):
    """Write a model's checkpoint in a format other programs load: `hf` (a Hugging Face transformers directory) or
    `gguf` (one file for llama.cpp). The files go to the object store; ExportCompleted lists them."""

    kind: ClassVar[str] = "export"
    type: Literal["ExportRequested"] = "ExportRequested"
    job_id: Identifier = Field(default_factory=new_id)
    model_id: Identifier | None = None
    model_name: ModelRef | None = None
    format: Literal["hf", "gguf"] = "hf"
    dtype: Literal["float32", "float16"] = "float32"
    step: int | None = Field(default=None, ge=0, description="A saved checkpoint's step; by default the one that "
                                                                "serves (the best, else the latest).")

    @model_validator(mode="after")
    def _names_a_model(self) -> ExportRequested:
        if self.model_id is None and self.model_name is None:
            raise ValueError("give `model_id` or `model_name`")
        return self


class ImportRequested(Command):
    """Register a Hugging Face transformers model directory (GPT2LMHeadModel or GPTNeoXForCausalLM with one of our
    tokenizers, e.g. one exported here) as a new model that generates, evaluates and trains further. Its files are
    in the object store under `imports/{job_id}/` (the gateway puts them there)."""

    kind: ClassVar[str] = "import"
    type: Literal["ImportRequested"] = "ImportRequested"
    job_id: Identifier = Field(default_factory=new_id)
    model_name: ModelName
    description: str = Field(default="", max_length=2000)
    files: dict[str, str] = Field(max_length=16, description="File name -> its object store key, which must be "
                                                             "`imports/{job_id}/{name}`.")

    @field_validator("files")
    @classmethod
    def _files_of_this_import(cls, files: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        job_id = info.data.get("job_id")
        for name, key in files.items():
            if not FILE_NAME.match(name) or name in (".", ".."):
                raise ValueError(f"{name!r} is not a plain file name (letters, digits, '.', '_', '-')")
            if key != f"imports/{job_id}/{name}":
                raise ValueError(f"{name} must be stored at imports/{job_id}/{name}")
        return files


class SweepRequested(Command):
    """Train many versions of one model name at once: a base training request, a search space over its
    hyperparameters, a number of trials, a metric to minimise and an early-stopping rule. The trials are ordinary
    training jobs (ids `{job_id}-t{index}`), spread over the workers by the queue; the sweep's facts say which is best
    so far, and at the end the best can be given an alias."""

    kind: ClassVar[str] = "sweep"
    type: Literal["SweepRequested"] = "SweepRequested"
    job_id: SweepId = Field(default_factory=new_id)
    model_name: ModelName = Field(description="The trials become versions of this name.")
    description: str = Field(default="", max_length=2000)
    dataset: DatasetRef
    tokenizer: TokenizerKind = "char"
    tokenizer_options: dict[str, int] = Field(default_factory=dict)
    hyperparameters: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, description="The base request's: a `preset` and overrides; the space's draws go over "
                                          "them.")
    space: dict[str, ParameterSpace] = Field(min_length=1, max_length=16, description=(
        "Hyperparameter name -> where its values come from."))
    method: Literal["grid", "random"] = Field(default="random", description=(
        "`grid`: every combination of the lists (ranges are not allowed); `random`: `trials` independent draws."))
    trials: int = Field(default=8, ge=1, le=100, description="How many trials a random search runs.")
    metric: Literal["val_loss", "train_loss"] = Field(default="val_loss", description="Minimised.")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    alias: AliasName | None = Field(default=None, description="Given to the best trial's version at the end.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="The random search's draws follow from it.")


class TokenizeRequested(Command):
    """Tokenize a stored dataset once into token shards (uint16 or uint32) with a manifest, for every training run that
    names it with the same tokenizer settings. A tokenization already stored is reused, not made again."""

    kind: ClassVar[str] = "tokenize"
    type: Literal["TokenizeRequested"] = "TokenizeRequested"
    job_id: Identifier = Field(default_factory=new_id)
    dataset_id: Identifier
    tokenizer: TokenizerKind = "char"
    tokenizer_options: dict[str, int] = Field(
        default_factory=dict, description="For `word`: max_vocab, min_frequency. For `bpe`: vocab_size."
    )
    sample_bytes: int | None = Field(default=None, ge=1024, le=2**44, description=(
        "Train the tokenizer on about this many bytes of the dataset's text (its first documents); all of it when "
        "absent. The whole dataset is encoded either way."))


class CancelRequested(Command):
    """Stop a job: a queued one never starts, a running one stops within seconds."""

    kind: ClassVar[str] = "cancel"
    type: Literal["CancelRequested"] = "CancelRequested"
    job_id: Identifier
    reason: str = Field(default="cancelled by request", max_length=500)


COMMANDS: dict[str, type[Command]] = {
    cls.model_fields["type"].default: cls
    for cls in (TrainRequested, EvaluateRequested, GenerateRequested, ExportRequested, ImportRequested,
                SweepRequested, TokenizeRequested, CancelRequested)
}

