"""The reference kit of the per-example membership audit (``shared/spec/privacy_audit.md``).

K shadow models are trained with the original's recipe, each on an independent seeded random
half of the training set, balanced so that every sample is IN for K/2 of them (Carlini et al.'s
LiRA layout). The kit keeps, per shadow and sample, the logit margin ``phi`` and whether the
shadow saw the sample; for extra sets (the test split) every entry is OUT. The shadows themselves
are not kept: the table is what the audit needs (the models would only extend it to new samples),
and a kit without weights holds less of the data a later request may ask to erase.

A kit is stored as safetensors (numpy arrays plus a JSON string in the header's metadata); nothing
is ever unpickled.

>>> from app.unlearning.architectures import build_model
>>> from app.unlearning.config import TrainingRecipe
>>> from app.unlearning.data import load_digits
>>> train_set, test_set = load_digits()
>>> small = train_set.take(np.arange(200))
>>> kit = build_reference_kit(
...     lambda: build_model("small_cnn", {"num_classes": 10, "width": 4, "hidden": 8}),
...     small, {"test": test_set}, TrainingRecipe(epochs=1), k=4, seed=0,
...     device=torch.device("cpu"))
>>> kit.phi.shape, kit.in_mask.sum(axis=0).tolist() == [2] * 200, kit.extra["test"].phi.shape
((4, 200), True, (4, 449))
>>> ReferenceKit.from_safetensors_bytes(kit.to_safetensors_bytes()).k
4
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from torch import nn

from app.unlearning.config import MembershipAuditConfig, TrainingRecipe
from app.unlearning.data import ArrayDataset
from app.unlearning.evaluation.evaluator import predict
from app.unlearning.evaluation.membership import (
    SetAudit,
    audit_set,
    binomial_tolerance,
    logit_margin,
    offline_scores,
    pooled_variance,
)
from app.unlearning.runtime import ProgressFn, StopFn
from app.unlearning.training import steps_per_epoch, train

#: The ``format`` written into every kit's metadata; a reader refuses any other.
KIT_FORMAT = "lethe.reference_kit/1"
#: Names of extra sets become tensor names, so they are restricted to a safe alphabet.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The largest safetensors header read (a kit's header is a few kB).
_MAX_HEADER = 16 * 1024 * 1024


class ReferenceKitError(ValueError):
    """The bytes are not a reference kit this version can read, or a request does not fit it."""


@dataclass(frozen=True, eq=False)
class PhiTable:
    """``phi`` of K shadows ``(K, M)`` on a set of samples (columns in ``sample_ids`` order)."""

    sample_ids: np.ndarray
    labels: np.ndarray
    phi: np.ndarray


@dataclass(frozen=True, eq=False)
class MemberTargets:
    """Per forget sample (in the forget set's order), the ``phi`` threshold above which it still
    looks like a member of the model, and how it was set (see
    :meth:`ReferenceKit.forget_targets`)."""

    threshold: np.ndarray
    sigma: float
    offset: float
    margin: float
    offset_source: str
    k: int

    def summary(self) -> dict[str, Any]:
        return {
            "n": len(self.threshold),
            "k": self.k,
            "sigma": round(self.sigma, 4),
            "offset": round(self.offset, 4),
            "offset_source": self.offset_source,
            "margin_sigmas": self.margin,
        }


@dataclass(frozen=True, eq=False)
class ReferenceKit:
    """The K x N table of ``phi`` on the training set, the IN/OUT matrix and what built them.

    - ``sample_ids``/``labels``: the training set's columns, ``(N,)``.
    - ``phi``: float32 ``(K, N)``; ``in_mask``: bool ``(K, N)``, true where shadow k trained on
      sample n.
    - ``extra``: tables of sets no shadow trained on (``"test"``: the audit's non-members).
    - ``recipe``, ``seed``, ``train_digest`` (:meth:`ArrayDataset.digest` of the training set),
      ``wall_time_s`` and ``optimizer_steps`` (all shadows together), ``shadows`` (one record
      per shadow: its seed, IN size, steps, time, accuracy on its IN and OUT samples), ``meta``
      (the caller's, e.g. architecture and dataset IDs), ``retired`` (shadows dropped since).
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    phi: np.ndarray
    in_mask: np.ndarray
    extra: dict[str, PhiTable]
    recipe: TrainingRecipe
    seed: int
    train_digest: str
    wall_time_s: float
    optimizer_steps: int
    shadows: tuple[dict[str, Any], ...]
    meta: dict[str, Any] = field(default_factory=dict)
    retired: int = 0

    def __post_init__(self) -> None:
        n = self.sample_ids.shape[0]
        if self.sample_ids.shape != (n,) or self.labels.shape != (n,):
            raise ReferenceKitError("sample_ids and labels must have shape (N,)")
        if self.phi.ndim != 2 or self.phi.shape[1] != n or self.in_mask.shape != self.phi.shape:
            raise ReferenceKitError("phi and in_mask must both have shape (K, N)")
        if len(np.unique(self.sample_ids)) != n:
            raise ReferenceKitError("sample IDs must be unique")
        if len(self.shadows) != self.k:
            raise ReferenceKitError("one shadow record per row of phi is required")
        for name, table in self.extra.items():
            if not _NAME.match(name):
                raise ReferenceKitError(f"extra set name {name!r} is not [A-Za-z0-9_-]{{1,64}}")
            m = table.sample_ids.shape[0]
            if table.phi.shape != (self.k, m) or table.labels.shape != (m,):
                raise ReferenceKitError(f"extra set {name!r}: phi must have shape (K, M)")

    @property
    def k(self) -> int:
        return int(self.phi.shape[0])

    @property
    def n(self) -> int:
        return int(self.phi.shape[1])

    def columns(self, sample_ids: Iterable[int], table: str | None = None) -> np.ndarray:
        """Column positions of ``sample_ids`` in the training table (or in extra ``table``);
        raises :class:`ReferenceKitError` naming how many IDs the kit does not hold."""
        ids_in = self.sample_ids if table is None else self._extra(table).sample_ids
        wanted = np.asarray(list(sample_ids), dtype=np.int64)
        order = np.argsort(ids_in)
        pos = np.searchsorted(ids_in, wanted, sorter=order)
        pos = np.minimum(pos, len(ids_in) - 1)
        found = order[pos]
        missing = int((ids_in[found] != wanted).sum()) if len(ids_in) else len(wanted)
        if missing:
            where = "the training table" if table is None else f"extra set {table!r}"
            raise ReferenceKitError(f"{missing} sample IDs are not in {where} of the kit")
        out: np.ndarray = found.astype(np.int64)
        return out

    def _extra(self, name: str) -> PhiTable:
        try:
            return self.extra[name]
        except KeyError:
            raise ReferenceKitError(
                f"the kit has no extra set {name!r} (it has {sorted(self.extra)})"
            ) from None

    def out_variance(self) -> float:
        """The one OUT variance of the kit: pooled over every training sample's OUT values and
        every extra set's values (all OUT), as :func:`pooled_variance` does."""
        tables = [self.phi.astype(np.float64)] + [
            t.phi.astype(np.float64) for t in self.extra.values()
        ]
        masks = [~self.in_mask] + [np.ones(t.phi.shape, dtype=bool) for t in self.extra.values()]
        return pooled_variance(np.concatenate(tables, axis=1), np.concatenate(masks, axis=1))

    def audit(
        self,
        phi_forget: np.ndarray,
        forget_ids: Iterable[int],
        phi_nonmembers: np.ndarray,
        *,
        nonmember_set: str = "test",
        nonmember_ids: Iterable[int] | None = None,
        config: MembershipAuditConfig | None = None,
    ) -> SetAudit:
        """The offline audit of a model on S = ``forget_ids``.

        ``phi_forget``: the model's ``phi`` on S in ``forget_ids`` order; ``phi_nonmembers``: its
        ``phi`` on the extra set ``nonmember_set`` (in the kit's column order, or in
        ``nonmember_ids`` order). Each sample is scored against its own OUT mean with the kit's
        one variance (:meth:`out_variance`), after removing the model's median shift against
        the shadows on the non-members (``extra["offset"]``: how much more confident it is on
        unseen samples than half-data shadows); the non-members calibrate the thresholds. The
        result's ``extra`` holds, per alpha, the binomial tolerance of the flagged share for |S|
        and this calibration set.

        The online test (:func:`~app.unlearning.evaluation.membership.online_scores`) is not
        offered here: it needs IN values for the calibration samples too, and no shadow trained
        on the test split.
        """
        cfg = config or MembershipAuditConfig()
        cols = self.columns(forget_ids)
        phi_s = np.asarray(phi_forget, dtype=np.float64)
        if phi_s.shape != cols.shape:
            raise ReferenceKitError("phi_forget must have one value per forget ID")
        table = self._extra(nonmember_set)
        nm_cols = (
            np.arange(len(table.sample_ids))
            if nonmember_ids is None
            else self.columns(nonmember_ids, nonmember_set)
        )
        phi_nm = np.asarray(phi_nonmembers, dtype=np.float64)
        if phi_nm.shape != nm_cols.shape:
            raise ReferenceKitError("phi_nonmembers must have one value per non-member")
        var = self.out_variance()
        nm_table = table.phi[:, nm_cols].astype(np.float64)
        nm_mask = np.ones(nm_table.shape, dtype=bool)
        offset = float(np.median(phi_nm - nm_table.mean(axis=0))) if len(phi_nm) else 0.0
        nm = offline_scores(phi_nm, nm_table, nm_mask, variance=var, offset=offset)
        s = offline_scores(
            phi_s, self.phi[:, cols], ~self.in_mask[:, cols], variance=var, offset=offset
        )
        result = audit_set(s.z, nm.z, cfg.alphas, cfg.delta, confidence=cfg.confidence, k=self.k)
        tolerance = {
            str(a): binomial_tolerance(
                result.n, a, cfg.tolerance_confidence, n_calibration=result.n_nonmembers
            )
            for a in cfg.alphas
        }
        result.extra.update(
            {
                "test": "offline",
                "offset": offset,
                "std_out": math.sqrt(var),
                "tolerance": tolerance,
                "tolerance_confidence": cfg.tolerance_confidence,
                "min_out_per_sample": int(s.n_out.min()) if len(s.n_out) else 0,
                "retired_shadows": self.retired,
            }
        )
        return result

    def forget_targets(
        self,
        forget_ids: Iterable[int],
        phi_validation: np.ndarray,
        validation_ids: Iterable[int],
        *,
        table: str,
        margin: float,
    ) -> MemberTargets:
        """Per forget sample, the ``phi`` above which it still looks like a member: its OUT mean,
        plus the model's median shift against the shadows, plus ``margin`` OUT standard
        deviations. What SFR-on's kit-targeted mode ascends on (see
        :func:`~app.unlearning.methods.sfr_on.targeted_loop`).

        The shift is estimated on validation samples the model never saw (``phi_validation``, in
        ``validation_ids`` order) from the extra table ``table`` that holds them, not on the
        audit's own non-members, so the audit's calibration set stays out of what SFR-on aims
        at. Raises :class:`ReferenceKitError` when that table does not hold those samples.
        """
        ids = np.asarray(list(validation_ids), dtype=np.int64)
        phi_v = np.asarray(phi_validation, dtype=np.float64)
        if phi_v.shape != ids.shape or not len(ids):
            raise ReferenceKitError("phi_validation must have one value per validation ID")
        v_cols = self.columns(ids, table)
        shadows_v = self.extra[table].phi[:, v_cols].astype(np.float64)
        offset = float(np.median(phi_v - shadows_v.mean(axis=0)))
        cols = self.columns(forget_ids)
        out = ~self.in_mask[:, cols]
        n_out = out.sum(axis=0)
        if (n_out == 0).any():
            raise ReferenceKitError("some forget samples are IN for every shadow of the kit")
        mean = (self.phi[:, cols].astype(np.float64) * out).sum(axis=0) / n_out
        sigma = math.sqrt(self.out_variance())
        return MemberTargets(
            threshold=(mean + offset + margin * sigma).astype(np.float32),
            sigma=sigma,
            offset=offset,
            margin=margin,
            offset_source=table,
            k=self.k,
        )

    def retire(self, sample_ids: Iterable[int]) -> ReferenceKit:
        """The kit without the shadows that trained on any of ``sample_ids`` and without those
        samples' columns: what remains after an erasure (the spec's erasure rule for shadows).

        A random S of a few dozen samples is IN for nearly every shadow, so this can empty the
        kit; a kit with fewer than two shadows left raises :class:`ReferenceKitError`.
        """
        cols = self.columns(sample_ids)
        keep_rows = np.logical_not(self.in_mask[:, cols].any(axis=1))
        if keep_rows.sum() < 2:
            raise ReferenceKitError(
                f"erasing these samples retires {int((~keep_rows).sum())} of {self.k} shadows; "
                "fewer than two would remain, so the kit must be rebuilt"
            )
        kept = [bool(v) for v in keep_rows]
        keep_cols = np.ones(self.n, dtype=bool)
        keep_cols[cols] = False
        extra = {name: replace(t, phi=t.phi[keep_rows]) for name, t in self.extra.items()}
        return replace(
            self,
            sample_ids=self.sample_ids[keep_cols],
            labels=self.labels[keep_cols],
            phi=self.phi[keep_rows][:, keep_cols],
            in_mask=self.in_mask[keep_rows][:, keep_cols],
            extra=extra,
            shadows=tuple(s for s, ok in zip(self.shadows, kept, strict=True) if ok),
            retired=self.retired + int((~keep_rows).sum()),
        )

    # ----------------------------------------------------------------------------------------
    # Storage: safetensors arrays plus one JSON metadata string; never pickle.
    # ----------------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-ready values."""
        return {
            "format": KIT_FORMAT,
            "k": self.k,
            "n": self.n,
            "seed": self.seed,
            "recipe": self.recipe.model_dump(mode="json"),
            "train_digest": self.train_digest,
            "wall_time_s": self.wall_time_s,
            "optimizer_steps": self.optimizer_steps,
            "shadows": list(self.shadows),
            "extra": sorted(self.extra),
            "meta": self.meta,
            "retired": self.retired,
        }

    def to_safetensors_bytes(self) -> bytes:
        tensors: dict[str, np.ndarray] = {
            "sample_ids": np.ascontiguousarray(self.sample_ids, dtype=np.int64),
            "labels": np.ascontiguousarray(self.labels, dtype=np.int64),
            "phi": np.ascontiguousarray(self.phi, dtype=np.float32),
            "in_mask": np.ascontiguousarray(self.in_mask, dtype=np.uint8),
        }
        for name, t in self.extra.items():
            tensors[f"extra.{name}.sample_ids"] = np.ascontiguousarray(t.sample_ids, np.int64)
            tensors[f"extra.{name}.labels"] = np.ascontiguousarray(t.labels, np.int64)
            tensors[f"extra.{name}.phi"] = np.ascontiguousarray(t.phi, np.float32)
        meta = {"format": KIT_FORMAT, "kit": json.dumps(self.metadata(), sort_keys=True)}
        return bytes(st_save(tensors, metadata=meta))

    @classmethod
    def from_safetensors_bytes(cls, data: bytes) -> ReferenceKit:
        """Read a kit written by :meth:`to_safetensors_bytes`; anything else raises
        :class:`ReferenceKitError` (the header is parsed as JSON, the arrays by safetensors)."""
        info = _read_metadata(data)
        try:
            arrays = st_load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise ReferenceKitError(f"not a safetensors file: {exc}") from None
        try:
            extra = {
                name: PhiTable(
                    sample_ids=_array(arrays, f"extra.{name}.sample_ids", np.int64),
                    labels=_array(arrays, f"extra.{name}.labels", np.int64),
                    phi=_array(arrays, f"extra.{name}.phi", np.float32),
                )
                for name in info["extra"]
            }
            mask = _array(arrays, "in_mask", np.uint8)
            if mask.size and mask.max() > 1:
                raise ReferenceKitError("in_mask holds values other than 0 and 1")
            kit = cls(
                sample_ids=_array(arrays, "sample_ids", np.int64),
                labels=_array(arrays, "labels", np.int64),
                phi=_array(arrays, "phi", np.float32),
                in_mask=mask.astype(bool),
                extra=extra,
                recipe=TrainingRecipe.model_validate(info["recipe"]),
                seed=int(info["seed"]),
                train_digest=str(info["train_digest"]),
                wall_time_s=float(info["wall_time_s"]),
                optimizer_steps=int(info["optimizer_steps"]),
                shadows=tuple(dict(s) for s in info["shadows"]),
                meta=dict(info["meta"]),
                retired=int(info.get("retired", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ReferenceKitError):
                raise
            raise ReferenceKitError(f"the kit's metadata is incomplete: {exc}") from None
        if kit.k != info["k"] or kit.n != info["n"]:
            raise ReferenceKitError("the arrays do not match the kit's metadata")
        return kit


def _read_metadata(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise ReferenceKitError("not a safetensors file: too short")
    size = int.from_bytes(data[:8], "little")
    if size > min(_MAX_HEADER, len(data) - 8):
        raise ReferenceKitError("not a safetensors file: bad header length")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = header.get("__metadata__") or {}
        if meta.get("format") != KIT_FORMAT:
            raise ReferenceKitError(f"not a reference kit of format {KIT_FORMAT}")
        info = json.loads(meta["kit"])
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        if isinstance(exc, ReferenceKitError):
            raise
        raise ReferenceKitError(f"not a reference kit: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != KIT_FORMAT:
        raise ReferenceKitError(f"not a reference kit of format {KIT_FORMAT}")
    return info


def _array(arrays: Mapping[str, np.ndarray], name: str, dtype: type[np.generic]) -> np.ndarray:
    if name not in arrays:
        raise ReferenceKitError(f"the kit has no array {name!r}")
    arr = arrays[name]
    if arr.dtype != dtype:
        raise ReferenceKitError(f"array {name!r} has dtype {arr.dtype}, expected {dtype.__name__}")
    return arr


# --------------------------------------------------------------------------------------------
# Building a kit.
# --------------------------------------------------------------------------------------------


def balanced_halves(n: int, k: int, seed: int) -> np.ndarray:
    """A bool ``(k, n)`` IN matrix: each column has exactly ``k // 2`` IN entries (``k`` odd: k//2
    or k//2 + 1, at random) at random rows, so each row holds about half of the samples.

    >>> m = balanced_halves(6, 4, seed=0)
    >>> m.sum(axis=0).tolist()
    [2, 2, 2, 2, 2, 2]
    """
    if k < 2 or n < 1:
        raise ValueError("need k >= 2 shadows and n >= 1 samples")
    rng = np.random.default_rng([seed, 0x5EED])
    rank = np.argsort(np.argsort(rng.random((k, n)), axis=0), axis=0)
    half = np.full(n, k // 2)
    if k % 2:
        half += rng.random(n) < 0.5
    mask: np.ndarray = rank < half[None, :]
    return mask


def shadow_seed(seed: int, index: int) -> int:
    """The seed of shadow ``index`` of a kit seeded ``seed`` (initialisation and batches)."""
    return int(np.random.default_rng([seed, index]).integers(0, 2**31 - 1))


def model_phi(
    model: nn.Module, data: ArrayDataset, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """``phi`` (:func:`~app.unlearning.evaluation.membership.logit_margin`) of ``model`` on every
    sample of ``data``, in order, float64."""
    return logit_margin(predict(model, data, device, batch_size), data.labels)


def build_reference_kit(
    make_model: Callable[[], nn.Module],
    train_set: ArrayDataset,
    extra_sets: Mapping[str, ArrayDataset],
    recipe: TrainingRecipe,
    *,
    k: int = 16,
    seed: int,
    device: torch.device,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    meta: Mapping[str, Any] | None = None,
    disjoint_ids: bool = True,
) -> ReferenceKit:
    """Train ``k`` shadows with ``recipe`` on balanced random halves of ``train_set`` and record
    their ``phi`` on ``train_set`` and on every extra set (which must share no sample ID with it).

    ``make_model()`` returns a fresh, untrained model; it is called after seeding torch with the
    shadow's seed, so the initialisation is reproducible. ``progress`` receives the engine's
    ``{"phase": "shadow_training", "step", "total", "losses"}`` (steps counted over all shadows)
    plus ``"shadow"`` and ``"shadows"``; ``should_stop`` is checked before every optimizer step
    and raises :class:`~app.unlearning.runtime.Cancelled`. The shadows are discarded.
    """
    if len(train_set) < 2:
        raise ValueError("the training set needs at least two samples")
    for name, ds in extra_sets.items():
        if not _NAME.match(name):
            raise ValueError(f"extra set name {name!r} is not [A-Za-z0-9_-]{{1,64}}")
        if disjoint_ids and np.isin(ds.sample_ids, train_set.sample_ids).any():
            raise ValueError(f"extra set {name!r} shares sample IDs with the training set")
    in_mask = balanced_halves(len(train_set), k, seed)
    sizes = in_mask.sum(axis=1)
    if sizes.min() < 1:
        raise ValueError("the training set is too small for this many shadows")
    totals = [recipe.epochs * steps_per_epoch(int(s), recipe.batch_size) for s in sizes]
    grand_total = int(sum(totals))
    phi = np.empty((k, len(train_set)), dtype=np.float32)
    extra_phi = {name: np.empty((k, len(ds)), dtype=np.float32) for name, ds in extra_sets.items()}
    shadows: list[dict[str, Any]] = []
    done = 0
    start = time.perf_counter()
    for i in range(k):
        s_seed = shadow_seed(seed, i)

        def forward(update: dict[str, Any], i: int = i, done: int = done) -> None:
            if progress is not None:
                progress(
                    {
                        **update,
                        "phase": "shadow_training",
                        "step": done + int(update.get("step", 0)),
                        "total": grand_total,
                        "shadow": i,
                        "shadows": k,
                    }
                )

        torch.manual_seed(s_seed)
        model = make_model()
        t0 = time.perf_counter()
        report = train(
            model,
            train_set.take(in_mask[i]),
            recipe,
            device=device,
            seed=s_seed,
            progress=forward,
            should_stop=should_stop,
        )
        logits = predict(model, train_set, device)
        phi[i] = logit_margin(logits, train_set.labels)
        correct = logits.argmax(dim=1).numpy() == train_set.labels
        for name, ds in extra_sets.items():
            extra_phi[name][i] = model_phi(model, ds, device)
        del model
        done += report.optimizer_steps
        shadows.append(
            {
                "seed": s_seed,
                "n_in": int(sizes[i]),
                "optimizer_steps": report.optimizer_steps,
                "wall_time_s": round(time.perf_counter() - t0, 4),
                "in_accuracy": round(100.0 * float(correct[in_mask[i]].mean()), 3),
                "out_accuracy": _share(correct[~in_mask[i]]),
            }
        )
    return ReferenceKit(
        sample_ids=train_set.sample_ids.copy(),
        labels=train_set.labels.copy(),
        phi=phi,
        in_mask=in_mask,
        extra={
            name: PhiTable(
                sample_ids=ds.sample_ids.copy(), labels=ds.labels.copy(), phi=extra_phi[name]
            )
            for name, ds in extra_sets.items()
        },
        recipe=recipe,
        seed=seed,
        train_digest=train_set.digest(),
        wall_time_s=time.perf_counter() - start,
        optimizer_steps=done,
        shadows=tuple(shadows),
        meta=dict(meta or {}),
    )


def _share(correct: np.ndarray) -> float | None:
    return round(100.0 * float(correct.mean()), 3) if len(correct) else None


def audit_model(
    kit: ReferenceKit,
    model: nn.Module,
    forget_set: ArrayDataset,
    nonmember_set: ArrayDataset,
    *,
    device: torch.device,
    nonmember_name: str = "test",
    config: MembershipAuditConfig | None = None,
) -> SetAudit:
    """One forward pass of ``model`` over S (``forget_set``) and the non-members, then
    :meth:`ReferenceKit.audit`; both sets are matched to the kit's columns by sample ID."""
    return kit.audit(
        model_phi(model, forget_set, device),
        forget_set.sample_ids,
        model_phi(model, nonmember_set, device),
        nonmember_set=nonmember_name,
        nonmember_ids=nonmember_set.sample_ids,
        config=config,
    )
