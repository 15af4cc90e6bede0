"""The Celery application the workers run: ``celery -A worker.celery_app worker -Q cpu``.

Configuration is shared with the API's task sender (:func:`app.core.tasks.make_celery`): explicit
task names, JSON only, ``acks_late``, prefetch 1, no result backend (the database holds results).
Nothing here touches torch or the database at import: those are created in the worker process on
first use (see :mod:`worker.context`), never before a fork.
"""

from __future__ import annotations

from app.core.config import get_settings
from app.core.tasks import make_celery

celery_app = make_celery(get_settings())
celery_app.conf.update(include=["worker.tasks.validate_model"])
