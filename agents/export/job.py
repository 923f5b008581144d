"""An export, as the child process runs it: read the checkpoint, write it in the format asked for, store the files.

The conversion is the model library's (model/export/); this job only moves bytes: from the checkpoint in the object
store to the files under `exports/{job_id}/`, which ExportCompleted lists and the gateway serves.
"""

from __future__ import annotations

from agents.jobs.child import JobContext
from agents.jobs.kinds import JobKind, JobSpec
from agents.train import checkpoints
from events import ExportCompleted, ExportedFile, JobCancelled, Rejected
from infra.objectstore.artifacts import export_content_type, export_key
from model.config import model_config_from_dict
from model.export import ExportError
from model.export.gguf import architecture_name, gguf_bytes
from model.export.hf import ARCHITECTURES, hf_files


class ExportSpec(JobSpec):
    """An export as the export agent accepted it."""

    checkpoint_key: str
    format: str
    dtype: str


def run_export(spec: ExportSpec, job: JobContext) -> None:
    store = job.store
    state = checkpoints.read_checkpoint(job, spec.checkpoint_key, "step", f"the checkpoint {spec.checkpoint_key}")
    config = model_config_from_dict(state["model_config"])
    try:
        if spec.format == "hf":
            files, architecture = hf_files(state, spec.dtype), ARCHITECTURES[config.positions]
        else:
            files, architecture = {"model.gguf": gguf_bytes(state, spec.dtype)}, f"gguf:{architecture_name(config)}"
    except ExportError as error:
        raise Rejected(str(error), error.field) from None
    if job.should_stop():
        job.emit(JobCancelled, reason="cancelled by request")
        return
    stored = []
    for name, data in files.items():
        key = export_key(spec.job_id, name)
        job.stored(lambda key=key, data=data, name=name: store.put_bytes(key, data, export_content_type(name)),
                   f"writing {name}")
        stored.append(ExportedFile(name=name, key=key, bytes=len(data)))
    job.emit(ExportCompleted, model_id=spec.model_id, format=spec.format, dtype=spec.dtype,
             architecture=architecture, step=int(state.get("step", 0)), checkpoint_key=spec.checkpoint_key,
             files=[f.model_dump() for f in stored])


EXPORT = JobKind("export", ExportSpec, run_export)
