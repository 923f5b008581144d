"""The one typed settings object, read from `LFZ_*` environment variables once and passed in.

Every URL has an embedded default (SQLite, a local folder, the Tansu broker started as a child process), so a fresh
machine runs with nothing installed; pointing the same variables at real servers changes nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LFZ_", extra="ignore")

    # Where local state lives in embedded mode (SQLite file, object folder, logs).
    data_dir: Path = Path(".lfz")

    # Kafka: empty means "start the embedded broker"; otherwise `kafka://host:port[,host:port]`.
    kafka_url: str = ""
    topic_prefix: str = "lfz."
    # How every Kafka client (producers, consumers, the admin client, Faust) authenticates and encrypts: as the
    # broker's listener says. SASL takes a username and password; TLS a CA file (and a client certificate for mTLS).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    topic_partitions: int = Field(default=4, ge=1)

    # SQLAlchemy async URL: `sqlite+aiosqlite:///path` or `postgresql+asyncpg://user:pass@host:5432/lfz`.
    database_url: str = ""

    # Object store: `file:///path` (a local folder) or `http(s)://host:port` (S3: MinIO, Versity S3 Gateway).
    object_store_url: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    bucket: str = "lfz"

    # Gateway.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Keys for operators' routes when api_keys is set: /metrics, and /health with each component's error.
    operator_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1)
    max_dataset_bytes: int = Field(default=20 * 1024 * 1024, ge=1)  # a dataset sent whole: JSON or a form's file
    max_upload_bytes: int = Field(default=50 * 1024 ** 3, ge=1)  # a dataset streamed or sent in parts
    # The parts of an upload session: S3 takes at most 10,000 parts, each but the last at least 5 MiB.
    upload_part_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024)
    tokens_per_shard: int = Field(default=1 << 24, ge=1024, le=1 << 30)  # of a tokenized dataset
    # A worker's local copies of token shards (data_dir/shards): the least recently used go past this size.
    shard_cache_bytes: int = Field(default=20 * 1024 ** 3, ge=0)
    max_import_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)  # one model directory uploaded to import
    # A request's inline text over this is stored as a dataset and named by key: Kafka takes messages of ~1 MiB.
    max_inline_dataset_bytes: int = Field(default=256 * 1024, ge=1, le=900 * 1024)
    max_prompt_chars: int = Field(default=8192, ge=1)
    max_new_tokens: int = Field(default=2048, ge=1)
    max_streams_per_key: int = Field(default=64, ge=1)
    max_generations_per_key: int = Field(default=16, ge=1)  # in flight per gateway process, evaluations waited for too
    max_active_jobs_per_key: int = Field(default=20, ge=1)  # training and evaluation jobs queued or running
    max_datasets_per_key: int = Field(default=200, ge=1)
    max_dataset_bytes_per_key: int = Field(default=100 * 1024 ** 3, ge=1)
    sse_keepalive_s: float = Field(default=15.0, gt=0)  # comment line on idle event streams
    submit_wait_s: float = Field(default=10.0, ge=0)  # read-your-writes: wait this long for the new row
    request_timeout_s: float = Field(default=120.0, gt=0)  # generate, and evaluate with ?wait=true

    # Agents.
    worker_id: str = ""
    worker_max_jobs: int = Field(default=1, ge=1)
    torch_threads: int = Field(default=0, ge=0)  # 0: choose from the cores available
    job_memory_mb: int = Field(default=0, ge=0)  # a job process's allocations; 0: 3/4 of the memory / worker_max_jobs
    progress_every_steps: int = Field(default=10, ge=1)
    progress_every_s: float = Field(default=2.0, gt=0)
    lease_s: float = Field(default=15.0, gt=0)
    job_max_takeovers: int = Field(default=5, ge=0)  # a job whose worker died more often than this fails
    job_max_wall_s: float = Field(default=86_400.0, ge=0)  # a run is cancelled after this long (0: no limit)
    # A training job of several processes (DDP): at most this many per job, and how often the elastic launcher
    # starts them all again from the last checkpoint when one dies.
    max_train_processes: int = Field(default=8, ge=1, le=64)
    train_max_restarts: int = Field(default=3, ge=0)
    # A job of several hosts: at most this many workers per job; the first waits this long for the others to join
    # it; `worker_address` is how other workers reach this one's rendezvous (default: this machine's host name).
    max_train_hosts: int = Field(default=8, ge=1, le=64)
    train_join_timeout_s: float = Field(default=300.0, gt=0)
    worker_address: str = ""
    object_store_patience_s: float = Field(default=300.0, ge=0)  # a job waits this long for the store, then goes back
    model_cache_size: int = Field(default=4, ge=1)
    fetch_wait_ms: int = Field(default=50, ge=1, le=10_000)  # how long a consumer's fetch waits for new records
    # Generation: one batching engine per loaded model, `generate_slots` sequences in each decoding step; up to
    # `generate_concurrency` requests in flight per worker (the rest wait on Kafka); one that waits for a slot longer
    # than `generate_max_wait_s` is refused.
    generate_concurrency: int = Field(default=128, ge=1)
    generate_slots: int = Field(default=64, ge=1, le=4096)
    generate_max_wait_s: float = Field(default=30.0, gt=0)
    generate_threads: int = Field(default=1, ge=1, le=256)  # PyTorch threads of a worker's generation
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)  # an agents worker's Prometheus metrics; 0: none

    log_level: str = "INFO"

    @field_validator("api_keys", "operator_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # Derived values: the embedded defaults live under data_dir.
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'lfz.db').resolve()}"

    @property
    def resolved_object_store_url(self) -> str:
        if self.object_store_url:
            return self.object_store_url
        return (self.data_dir / "objects").resolve().as_uri()

    @property
    def kafka_bootstrap(self) -> str:
        """`host:port[,host:port]` for aiokafka; empty when the embedded broker has not been started yet."""
        return self.kafka_url.removeprefix("kafka://")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; callers pass the result down instead of reading `os.environ` themselves."""
    return Settings(**overrides)  # type: ignore[arg-type]
