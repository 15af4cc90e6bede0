"""Digests that name things across the service, defined once so that every place that shows one
(the audit log, a dataset, a certificate) shows the same value for the same thing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

SAMPLE_SET_DIGEST_METHOD = "sha256 over the sorted, distinct sample IDs as little-endian int64"


def sample_set_digest(ids: Iterable[int] | NDArray[np.int64]) -> str:
    """The digest of a set of sample IDs: order and repeats do not change it.

    >>> sample_set_digest([3, 1, 2]) == sample_set_digest([1, 2, 3, 3])
    True
    >>> sample_set_digest([]) == hashlib.sha256(b"").hexdigest()
    True
    """
    values = ids if isinstance(ids, np.ndarray) else list(ids)
    distinct = np.unique(np.asarray(values, dtype=np.int64))
    return hashlib.sha256(distinct.astype("<i8").tobytes()).hexdigest()
