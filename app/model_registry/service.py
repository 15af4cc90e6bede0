"""The model registry: intake of uploaded checkpoints, and their status.

What can be checked without torch is checked here, before anything is stored: the spec, the
dataset it names, and the weights file's safetensors structure. The deep check (the weights load
into the architecture, a forward pass, baseline accuracy) runs as a ``validate_model`` job on a
worker; the version stays ``validating`` until it answers ``ready`` or ``rejected``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import service as audit
from app.core.config import Settings
from app.core.errors import Conflict, Gone, InvalidArtifact, InvalidInput, NotFound
from app.core.safetensors_check import SafetensorsError, inspect
from app.core.storage import ArtifactStore, StagedBlob
from app.core.tasks import VALIDATE_MODEL, TaskSender
from app.core.uploads import UploadedFile
from app.datasets import repository as datasets
from app.generation import evaluators
from app.generation.evaluators import NewEvaluator
from app.generation.samples import SamplesUnreadable, StoredSamples
from app.jobs import routing
from app.jobs import service as jobs
from app.model_registry import repository
from app.model_registry.schemas import ModelSpec, Normalization
from app.models import Dataset, ModelVersion
from app.models.base import new_id
from app.models.job import JobKind
from app.models.model_version import ModelStatus
from app.unlearning.diffusion.config import DiffusionConfigError
from app.unlearning.diffusion.manifest import DIFFUSION_ARCHITECTURE, parse_diffusion_spec
from app.unlearning.spec import SpecError, validate_architecture

#: Generated images per class of a diffusion version (uint8 tensors ``class_<k>``).
SAMPLES_MEDIA = "application/vnd.lethe.generated-samples+safetensors"

# The architectures hold float32 weights; integer tensors appear only as BatchNorm's step
# counters. Anything else would store a second, differently sized digest of the same model.
WEIGHT_DTYPES = frozenset({"F32", "I64"})


def _field_error(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"field": field, "message": message}])


def parse_spec(raw: str) -> ModelSpec:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _field_error("body.spec", f"not valid JSON ({exc.msg})") from None
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                "field": "body.spec." + ".".join(str(p) for p in e["loc"]),
                "message": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        fields = ", ".join(e["field"] for e in errors)
        raise InvalidInput(f"Invalid model spec fields: {fields}", errors=errors) from None


def register(
    session: Session,
    store: ArtifactStore,
    tasks: TaskSender,
    settings: Settings,
    tenant_id: str,
    *,
    spec_raw: str,
    weights: UploadedFile,
    actor: str,
) -> tuple[ModelVersion, str]:
    """Check and record an upload; returns the new version and its validation job's ID."""
    spec = parse_spec(spec_raw)
    dataset = datasets.get(session, tenant_id, spec.dataset_id)
    if spec.architecture == DIFFUSION_ARCHITECTURE:
        # A class-conditional noise predictor: its args are the UNet2DModel and scheduler
        # configs and its recipe, checked here without torch against the dataset.
        if dataset is None:
            raise _field_error(
                "body.spec.dataset_id", f"no dataset {spec.dataset_id} in this tenant"
            )
        c, h, w = (int(x) for x in dataset.image_shape)
        try:
            diffusion = parse_diffusion_spec(
                spec.args, dataset_classes=dataset.num_classes, image_shape=(c, h, w)
            )
        except DiffusionConfigError as exc:
            raise _field_error(f"body.spec.args.{exc.field}", exc.message) from None
        args = diffusion.model_dump(mode="json")
        args["num_classes"] = diffusion.unet.num_classes
    else:
        try:
            args = validate_architecture(spec.architecture, spec.args, spec.input_shape)
        except SpecError as exc:
            raise _field_error(f"body.spec.{exc.field}", exc.message) from None
    if dataset is None:
        raise _field_error("body.spec.dataset_id", f"no dataset {spec.dataset_id} in this tenant")
    if list(spec.input_shape) != list(dataset.image_shape):
        raise _field_error(
            "body.spec.input_shape",
            f"{spec.input_shape} does not match the dataset's images {dataset.image_shape}",
        )
    num_classes = int(args["num_classes"])
    if num_classes < dataset.num_classes:
        raise _field_error(
            "body.spec.args.num_classes",
            f"{num_classes} outputs cannot cover the dataset's labels 0..{dataset.num_classes - 1}",
        )
    channels = spec.input_shape[0]
    norm = spec.normalization or Normalization(mean=[0.0] * channels, std=[1.0] * channels)
    if len(norm.mean) != channels:
        raise _field_error("body.spec.normalization", f"needs {channels} values (one per channel)")

    try:
        st = inspect(weights.staged.local_path(), max_header_bytes=settings.max_header_bytes)
    except SafetensorsError as exc:
        raise InvalidArtifact(
            f"weights: {exc}", errors=[{"field": "body.weights", "message": str(exc)}]
        ) from None
    if not st.tensors:
        raise InvalidArtifact("weights: the file holds no tensors")
    bad = sorted(n for n, t in st.tensors.items() if t.dtype not in WEIGHT_DTYPES)
    if bad:
        raise InvalidArtifact(
            f"weights: tensors {bad[:10]} are {sorted({st.tensors[n].dtype for n in bad})};"
            f" {spec.architecture} holds float32 (F32) weights and int64 (I64) counters: convert"
            " them before uploading (e.g. `{k: v.float()}` in torch), so one model has one digest",
            errors=[{"field": "body.weights", "message": "unexpected tensor dtypes"}],
        )

    artifact = artifacts.ingest(session, store, weights.staged, "application/vnd.safetensors")
    model_id = new_id()
    mv = ModelVersion(
        id=model_id,
        tenant_id=tenant_id,
        lineage_id=model_id,
        parent_id=None,
        version=1,
        name=spec.name,
        status=ModelStatus.validating,
        architecture=spec.architecture,
        arch_args=args,
        input_shape=list(spec.input_shape),
        normalization=norm.model_dump(),
        num_classes=num_classes,
        training=spec.training.model_dump(),
        dataset_id=dataset.id,
        weights_digest=artifact.digest,
        weights_size=artifact.size,
    )
    session.add(mv)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="model.uploaded",
        subject_type="model",
        subject_id=mv.id,
        payload={"weights_digest": mv.weights_digest, "spec": spec.model_dump(mode="json")},
    )
    job = jobs.create(
        session,
        tasks,
        tenant_id=tenant_id,
        kind=JobKind.validate_model,
        task_name=VALIDATE_MODEL,
        queue=routing.route(session, settings, tenant_id=tenant_id, model=mv).queue,
        model_id=mv.id,
        actor=actor,
    )
    return mv, job.id


def record_validation(
    session: Session,
    store: ArtifactStore,
    mv: ModelVersion,
    *,
    baseline: dict[str, Any] | None,
    reason: str,
    samples: StagedBlob | None = None,
    evaluator: NewEvaluator | None = None,
    train_digest: str | None = None,
    actor: str = "worker",
    job_id: str = "",
) -> None:
    """Record the deep check's answer: with a baseline the version is ``ready``; without, it is
    ``rejected`` and its bytes are deleted, unless another version shares them. A diffusion
    model's check may bring its generated samples and the evaluator classifier it trained."""
    if baseline is not None:
        mv.status = ModelStatus.ready
        mv.status_reason = None
        if samples is not None:
            mv.samples_digest = artifacts.ingest(session, store, samples, SAMPLES_MEDIA).digest
        if evaluator is not None and train_digest is not None:
            ds = session.get(Dataset, mv.dataset_id)
            if ds is not None:
                kept = evaluators.record(
                    session, store, ds, evaluator, train_digest=train_digest, job_id=job_id,
                    actor=actor,
                )  # fmt: skip
                if kept is not None:
                    baseline = {**baseline, "evaluator": {**baseline.get("evaluator", {}),
                                                          "kept_as": kept.id}}  # fmt: skip
        mv.baseline_metrics = baseline
        return
    mv.status = ModelStatus.rejected
    mv.status_reason = reason
    digest, mv.weights_digest = mv.weights_digest, None
    session.flush()
    if digest and not artifacts.is_referenced(session, digest):
        artifacts.forget_artifact(session, store, digest)


def load(session: Session, tenant_id: str, model_id: str) -> ModelVersion:
    mv = repository.get(session, tenant_id, model_id)
    if mv is None:
        raise NotFound(f"No model {model_id}.")
    return mv


def samples_digest(mv: ModelVersion) -> str:
    """The digest of a diffusion version's stored generated images, or the problem that says
    why there are none."""
    if mv.architecture != DIFFUSION_ARCHITECTURE:
        raise Conflict(f"Model {mv.id} is a classifier; only diffusion models generate samples.")
    if mv.status == ModelStatus.purged:
        raise Gone(
            f"Model {mv.id} (version {mv.version}) was purged: its generated images were"
            " destroyed with its weights.",
            model_status=mv.status,
        )
    if mv.samples_digest is None:
        raise NotFound(
            f"Model {mv.id} has no stored samples"
            + (" yet: its check is still running." if mv.status == ModelStatus.validating else ".")
        )
    return mv.samples_digest


def stored_samples(store: ArtifactStore, mv: ModelVersion) -> StoredSamples:
    """A diffusion version's stored generated images (see :func:`samples_digest`)."""
    with store.local_file(samples_digest(mv)) as path:
        blob = path.read_bytes()
    try:
        return StoredSamples.parse(blob)
    except SamplesUnreadable as exc:
        raise Conflict(f"Model {mv.id}'s stored samples cannot be read: {exc}") from None
