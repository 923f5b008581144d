"""The message contract: every command and fact, their JSON form, and the topics they travel on.

This package is the only home of a message schema; the gateway, the agents, the CLI and the tests import it.
"""

from events.codec import dead_letter, decode_command, decode_event, id_from_position
from events.commands import (
    COMMANDS,
    CancelRequested,
    Command,
    EvaluateRequested,
    ExportRequested,
    GenerateRequested,
    ImportRequested,
    SweepRequested,
    TrainRequested,
)
from events.errors import DecodeError, Rejected
from events.facts import (
    FACTS,
    FAILED_TYPE_FOR_KIND,
    JOB_KINDS,
    QUEUED_KINDS,
    TERMINAL_TYPES,
    CheckpointSaved,
    Completion,
    DatasetDeleted,
    DatasetUploaded,
    DeadLetter,
    EvaluationCompleted,
    EvaluationFailed,
    ExportCompleted,
    ExportedFile,
    ExportFailed,
    GenerationCompleted,
    GenerationFailed,
    ImportFailed,
    JobAccepted,
    JobCancelled,
    JobEvent,
    JobsPruned,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelDeleted,
    ModelImported,
    ServingCheckpointChosen,
    SweepCompleted,
    SweepFailed,
    SweepProgress,
    SweepStarted,
    SweepTrialStopped,
    TokensGenerated,
    TrainCompleted,
    TrainFailed,
    TrainProgress,
    TrainStarted,
    ValidationCompleted,
)
from events.fields import DatasetRef, check_text, dataset_text, new_id, utc_now
from events.sampling import Sampling
from events.topics import Topics

__all__ = [
    "COMMANDS", "CancelRequested", "CheckpointSaved", "Command", "Completion", "DatasetDeleted", "DatasetRef",
    "DatasetUploaded", "DeadLetter", "DecodeError", "EvaluateRequested", "EvaluationCompleted", "EvaluationFailed",
    "ExportCompleted", "ExportFailed", "ExportRequested", "ExportedFile", "FACTS", "FAILED_TYPE_FOR_KIND",
    "GenerateRequested", "GenerationCompleted", "GenerationFailed", "ImportFailed", "ImportRequested", "JOB_KINDS",
    "JobAccepted", "JobCancelled", "JobEvent", "JobsPruned", "ModelAliasRemoved", "ModelAliasSet", "ModelDeleted",
    "ModelImported", "QUEUED_KINDS", "Rejected", "Sampling", "ServingCheckpointChosen", "SweepCompleted",
    "SweepFailed", "SweepProgress", "SweepRequested", "SweepStarted", "SweepTrialStopped", "TERMINAL_TYPES",
    "TokensGenerated", "Topics", "TrainCompleted", "TrainFailed",
    "TrainProgress", "TrainRequested", "TrainStarted", "ValidationCompleted", "check_text", "dataset_text",
    "dead_letter", "decode_command", "decode_event", "id_from_position", "new_id", "utc_now",
]
