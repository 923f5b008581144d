"""What clients send: request bodies and query parameters, validated where they enter.

These models are also the OpenAPI document's request schemas. Limits that depend on the settings (prompt length,
new tokens, dataset size) are checked by the endpoints, which know the settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, field_validator,
                      model_validator)

from events import JOB_KINDS, Sampling
from events.commands import TokenizerKind
from events.fields import Identifier, NewModelName
from events.sampling import StopString

Hyperparameters = dict[str, float | int | str | bool | None]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatasetBody(Body):
    """A dataset given inline (`POST /api/v1/datasets` also takes a multipart file upload)."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = "dataset"
    text: str = Field(description="The training text, UTF-8. Must not be empty.")


class UploadBody(Body):
    """An upload session of a dataset file of `size` bytes."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                           pattern=r"^[^\x00]+$")] = "dataset"
    size: int = Field(ge=1, description="The file's size in bytes.")
    format: Literal["text", "jsonl", "parquet"] = Field(default="text", description=(
        "`text`: one document; `jsonl`: one JSON object per line with a text field; `parquet`: a text column. "
        "Documents are separated by end-of-text."))
    compression: Literal["none", "gzip"] = "none"
    text_column: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        default="text", description="The field (jsonl) or column (parquet) holding the text.")
    part_bytes: int | None = Field(default=None, ge=1024, le=512 * 1024 * 1024, description=(
        "The size of each part but the last (the server's default when absent; raised to fit 10,000 parts)."))


class TokenizeBody(Body):
    """Tokenize a dataset into token shards, once for every training run with these settings."""

    tokenizer: Literal["char", "word", "bpe"] = "char"
    tokenizer_options: dict[str, int] = Field(default_factory=dict, description=(
        "For `word`: max_vocab (or vocab_size), min_frequency. For `bpe`: vocab_size."))
    sample_bytes: int | None = Field(default=None, ge=1024, le=2**44, description=(
        "Train the tokenizer on about this many bytes of text; all of it when absent."))


class DatasetChoice(Body):
    """Training or held-out text: inline `text`, or the `id` of an uploaded dataset."""

    text: str | None = Field(default=None, description="The text itself.")
    id: Identifier | None = Field(default=None, description="An id returned by `POST /api/v1/datasets`.")

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetChoice:
        if (self.text is None) == (self.id is None):
            raise ValueError("give exactly one of `text` or `id`")
        return self


PROCESSES = ("Training processes (DDP ranks) on the worker that runs the job, one device each when there are several; "
             "the global batch (batch_size x grad_accum) stays the same and is split over them, so one of the two "
             "must be a multiple of it. At most LFZ_MAX_TRAIN_PROCESSES.")
HOSTS = ("Workers the job trains on, each with `processes` ranks: the worker that claims the job waits up to "
         "LFZ_TRAIN_JOIN_TIMEOUT_S for others to join it; the global batch is split over processes x hosts ranks. "
         "At most LFZ_MAX_TRAIN_HOSTS.")


class CreateModelBody(Body):
    """A new model version; creating it starts its training job. A name used before gets its next version."""

    name: NewModelName
    description: str = Field(default="", max_length=2000)
    dataset: DatasetChoice
    tokenizer: TokenizerKind = "char"
    tokenizer_options: dict[str, int] = Field(
        default_factory=dict, description="For `word`: max_vocab, min_frequency. For `bpe`: vocab_size."
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=dict,
        description="A `preset` (tiny, classic, cpu-baby, small) and overrides, e.g. `max_iters` or `MAX_ITERS`.",
    )
    processes: int = Field(default=1, ge=1, le=64, description=PROCESSES)
    hosts: int = Field(default=1, ge=1, le=64, description=HOSTS)


class TrainMoreBody(Body):
    """Continue training from the latest checkpoint. `max_iters` counts the additional iterations."""

    dataset: DatasetChoice | None = Field(default=None, description="Defaults to the model's own dataset.")
    hyperparameters: Hyperparameters = Field(default_factory=dict)
    processes: int = Field(default=1, ge=1, le=64, description=PROCESSES)
    hosts: int = Field(default=1, ge=1, le=64, description=HOSTS)


class AliasBody(Body):
    """Point an alias at a version of the name."""

    version: int = Field(ge=1, le=2**31 - 1, description="The version number, as in `name/version`.")


class ServingBody(Body):
    """Which checkpoint of this version generates, evaluates and exports."""

    checkpoint: Literal["best", "last"] = Field(description="`best` by validation loss, or the `last` written.")


class EvaluateBody(Body):
    prompts: list[Annotated[str, StringConstraints(max_length=4000)]] = Field(default_factory=list, max_length=64)
    held_out: DatasetChoice | None = Field(default=None, description="Text the model did not train on.")
    dataset_id: Identifier | None = Field(default=None, description="Shorthand for `held_out: {id: ...}`.")
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    seed: int | None = Field(default=0, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _one_held_out(self) -> EvaluateBody:
        if self.held_out is not None and self.dataset_id is not None:
            raise ValueError("give `held_out` or `dataset_id`, not both")
        return self


class GenerateBody(Body, Sampling):
    """What to generate and how each token is picked (the sampling fields are GenerateRequested's)."""

    prompt: str = ""
    max_tokens: int = Field(
        default=64, ge=1, validation_alias=AliasChoices("max_tokens", "max_length"),
        description="New tokens to generate, not counting the prompt (`max_length`, the first service's name, too).",
    )
    _max_tokens_as: str = PrivateAttr(default="max_tokens")  # the name the request used, to name it back in errors

    @model_validator(mode="wrap")
    @classmethod
    def _remember_the_spelling(cls, data: Any, handler: Any) -> GenerateBody:
        body = handler(data)
        if isinstance(data, dict) and "max_length" in data and "max_tokens" not in data:
            body._max_tokens_as = "max_length"
        return body
    stop: StopString | list[StopString] | None = Field(default=None, description="Stop at any of these strings.")
    stream: bool = Field(default=False, description="Stream TokensGenerated events as server-sent events.")


def sampling_of(body: Sampling, stop: str | list[str] | None, num_sequences: int) -> Sampling:
    """The sampling fields of a body whose `stop` may be one string (and whose sequence count may be named `n`)."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if s]
    values = {name: getattr(body, name) for name in Sampling.model_fields}
    return Sampling(**{**values, "stop": stops, "num_sequences": num_sequences})


# -- query parameters -------------------------------------------------------------------------------------------------


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UploadQuery(Query):
    format: Literal["text", "jsonl", "parquet"] = "text"
    compression: Literal["none", "gzip"] = "none"
    text_column: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "text"


class PageQuery(Query):
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)


ModelStatus = Literal["pending", "training", "completed", "failed", "cancelled", "deleted"]
JobStatus = Literal["accepted", "running", "completed", "failed", "cancelled"]


class ModelsQuery(PageQuery):
    status: ModelStatus | None = None
    name: Annotated[str, StringConstraints(max_length=100)] | None = None


class CompareQuery(Body):
    runs: str = Field(max_length=2000, description=(
        "2 to 10 model versions separated by commas, each an id, a name (its newest version), `name@alias` or "
        "`name/version`."))

    @property
    def refs(self) -> list[str]:
        return [ref.strip() for ref in self.runs.split(",") if ref.strip()]


class JobsQuery(PageQuery):
    kind: str | None = Field(default=None, max_length=100,
                             description="train, evaluate or generate; several separated by commas.")
    status: JobStatus | None = None
    model_id: Identifier | None = None

    @field_validator("kind")
    @classmethod
    def _known_kinds(cls, value: str | None) -> str | None:
        if value is not None and not set(value.split(",")) <= set(JOB_KINDS):
            raise ValueError(f"each kind must be one of {', '.join(JOB_KINDS)}")
        return value

    @property
    def kinds(self) -> list[str] | None:
        return self.kind.split(",") if self.kind else None


class PruneBody(Body):
    """Finished jobs to take out of the listings: of these kinds, finished at least this long ago."""

    kind: str = Field(default="generate", max_length=100, description="train, evaluate or generate, or several "
                                                                      "separated by commas.")
    older_than_s: float = Field(default=0.0, ge=0.0, le=10 * 365 * 86400, allow_inf_nan=False)

    @field_validator("kind")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        return JobsQuery._known_kinds(value) or value


class EventsQuery(Query):
    last_event_id: int | None = Field(
        default=None, ge=0, le=2**31 - 1,
        description="Resume after this sequence number (the `Last-Event-ID` header does the same).",
    )
    format: Literal["sse", "json"] = Field(default="sse", description="`json`: the whole log as one JSON list.")
    api_key: str | None = Field(
        default=None, description="For browsers' EventSource, which cannot send an Authorization header."
    )


class FeedQuery(Query):
    api_key: str | None = Field(
        default=None, description="For browsers' EventSource, which cannot send an Authorization header."
    )


class WaitQuery(Query):
    wait: bool = Field(default=False, description="Answer with the report when the evaluation ends.")


class ExportBody(Body):
    """Which checkpoint, in which format. `hf`: a Hugging Face transformers directory (config.json, model.safetensors,
    tokenizer.json, ...); `gguf`: one file for llama.cpp (byte-level BPE models)."""

    format: Literal["hf", "gguf"] = "hf"
    dtype: Literal["float32", "float16"] = "float32"
    step: int | None = Field(default=None, ge=0, le=2**31 - 1,
                             description="A saved checkpoint's step; by default the one that serves the model.")
