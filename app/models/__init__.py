"""SQLAlchemy 2 typed tables, one file per table. Importing this package registers them all."""

from app.models.api_key import ApiKey
from app.models.artifact import Artifact
from app.models.audit_checkpoint import AuditCheckpoint
from app.models.audit_event import AuditEvent
from app.models.base import Base
from app.models.cached_evaluator import CachedEvaluator
from app.models.certificate import Certificate, SigningKey
from app.models.dataset import Dataset
from app.models.erasure import DatasetErasure, ErasureReceipt
from app.models.evaluation import Evaluation
from app.models.forget_request import ForgetRequest
from app.models.job import Job, JobTransition
from app.models.model_version import ModelVersion
from app.models.reference_kit import ReferenceKit
from app.models.tenant import Tenant

__all__ = [
    "ApiKey",
    "Artifact",
    "AuditCheckpoint",
    "AuditEvent",
    "Base",
    "CachedEvaluator",
    "Certificate",
    "Dataset",
    "DatasetErasure",
    "ErasureReceipt",
    "Evaluation",
    "ForgetRequest",
    "Job",
    "JobTransition",
    "ModelVersion",
    "ReferenceKit",
    "SigningKey",
    "Tenant",
]
