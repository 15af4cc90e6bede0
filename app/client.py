"""A small Python client for Lethe's HTTP API (httpx).

>>> client = LetheClient("http://127.0.0.1:8000", api_key="lethe_...")  # doctest: +SKIP
>>> ds = client.upload_dataset("digits.safetensors", name="digits")    # doctest: +SKIP

Every non-2xx answer raises :class:`LetheAPIError`, which carries the RFC 9457 problem.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})


class LetheError(Exception):
    """Base class of the client's errors."""


class LetheAPIError(LetheError):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "request failed"
        super().__init__(f"HTTP {status}: {detail}")


class LetheTimeout(LetheError):
    pass


def _file_stream(
    fh: BinaryIO, total: int, on_progress: Callable[[int, int], None] | None
) -> Iterator[bytes]:
    sent = 0
    while chunk := fh.read(1024 * 1024):
        sent += len(chunk)
        if on_progress:
            on_progress(sent, total)
        yield chunk


class LetheClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LetheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, res: httpx.Response) -> httpx.Response:
        if res.status_code >= 400:
            try:
                problem = res.json()
            except ValueError:
                problem = {"detail": res.text[:500]}
            raise LetheAPIError(res.status_code, problem)
        return res

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        res = self._check(self._http.request(method, path, **kwargs))
        return res.json() if res.content else None

    # -- health and identity -------------------------------------------------------------------
    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def whoami(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/whoami"))

    # -- uploads -------------------------------------------------------------------------------
    def _multipart(
        self,
        path: str,
        files: dict[str, Path],
        fields: dict[str, str],
        on_progress: Callable[[int, int], None] | None,
    ) -> dict[str, Any]:
        # httpx streams file objects in multipart bodies, so large files are never held whole.
        handles = {name: open(p, "rb") for name, p in files.items()}  # noqa: SIM115
        try:
            total = sum(p.stat().st_size for p in files.values())
            sent = [0]

            class _Counting:
                def __init__(self, fh: BinaryIO) -> None:
                    self._fh = fh

                def read(self, n: int = -1) -> bytes:
                    data = self._fh.read(n)
                    sent[0] += len(data)
                    if on_progress:
                        on_progress(sent[0], total)
                    return data

            multipart = {n: (files[n].name, _Counting(fh)) for n, fh in handles.items()}
            return dict(self.request("POST", path, files=multipart, data=fields))
        finally:
            for fh in handles.values():
                fh.close()

    def upload_dataset(
        self,
        train: str | Path,
        *,
        name: str,
        test: str | Path | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        files = {"train": Path(train)}
        if test is not None:
            files["test"] = Path(test)
        return self._multipart("/v1/datasets", files, {"name": name}, on_progress)

    def upload_model(
        self,
        weights: str | Path,
        spec: dict[str, Any],
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        return self._multipart(
            "/v1/models", {"weights": Path(weights)}, {"spec": json.dumps(spec)}, on_progress
        )

    # -- reads ---------------------------------------------------------------------------------
    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/datasets/{dataset_id}"))

    def get_model(self, model_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/models/{model_id}"))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/jobs/{job_id}"))

    def list_models(self, **filters: Any) -> Iterator[dict[str, Any]]:
        yield from self._paginate("/v1/models", filters)

    def list_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        yield from self._paginate("/v1/jobs", filters)

    def list_datasets(self, **filters: Any) -> Iterator[dict[str, Any]]:
        yield from self._paginate("/v1/datasets", filters)

    def _paginate(self, path: str, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # An unset filter is left out: httpx would send None as an empty string, a real value.
        params = {k: v for k, v in filters.items() if v is not None}
        cursor: str | None = None
        while True:
            page = self.request(
                "GET", path, params={**params, **({"cursor": cursor} if cursor else {})}
            )
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # -- forgetting -----------------------------------------------------------------------------
    def forget(
        self,
        model_id: str,
        *,
        class_ids: list[int] | None = None,
        sample_ids: list[int] | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Submit a forget request (exactly one of ``class_ids`` or ``sample_ids``)."""
        body: dict[str, Any] = {**options}
        if class_ids is not None:
            body["class_ids"] = class_ids
        if sample_ids is not None:
            body["sample_ids"] = sample_ids
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(
            self.request(
                "POST", f"/v1/models/{model_id}/forget-requests", json=body, headers=headers
            )
        )

    def forget_samples_file(
        self,
        model_id: str,
        sample_ids: list[int],
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Submit a sample-wise forget request with the IDs as an uploaded text file: for lists
        longer than a JSON body may carry. ``options`` are the other fields of the request."""
        text = "\n".join(str(i) for i in sample_ids).encode()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(
            self.request(
                "POST",
                f"/v1/models/{model_id}/forget-requests/file",
                files={"sample_ids": ("sample_ids.txt", text, "text/plain")},
                data={"request": json.dumps(options)},
                headers=headers,
            )
        )

    def forget_dataset(
        self, dataset_id: str, *, idempotency_key: str | None = None, **body: Any
    ) -> dict[str, Any]:
        """Forget from every model trained on a dataset: one request per lineage, one group."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        path = f"/v1/datasets/{dataset_id}/forget-requests"
        return dict(self.request("POST", path, json=body, headers=headers))

    def forget_request_group(self, group_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/forget-request-groups/{group_id}"))

    def withdraw_request(self, request_id: str, reason: str) -> dict[str, Any]:
        path = f"/v1/forget-requests/{request_id}/withdraw"
        return dict(self.request("POST", path, json={"reason": reason}))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/jobs/{job_id}/cancel"))

    def lineage(self, model_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/models/{model_id}/lineage"))

    def sample_grid(
        self, model_id: str, class_id: int | None = None, n: int | None = None
    ) -> bytes:
        """A diffusion version's generated images as a PNG grid: every class (one row each), or
        one class."""
        params: dict[str, int] = {}
        if class_id is not None:
            params["class"] = class_id
        if n is not None:
            params["n"] = n
        return self._check(self._http.get(f"/v1/models/{model_id}/samples", params=params)).content

    def certificate(self, model_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/models/{model_id}/certificate"))

    def exposure(self, dataset_id: str, sample_id: int) -> dict[str, Any]:
        """Which versions and stored artifacts still hold a training sample."""
        path = f"/v1/datasets/{dataset_id}/samples/{sample_id}/exposure"
        return dict(self.request("GET", path))

    def request_reference_kit(self, model_id: str, *, k: int = 16, seed: int = 0) -> dict[str, Any]:
        path = f"/v1/models/{model_id}/reference-kits"
        return dict(self.request("POST", path, json={"k": k, "seed": seed}))

    def reference_kit(self, kit_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/reference-kits/{kit_id}"))

    def reference_kits(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return list(self.request("GET", "/v1/reference-kits", params=params)["items"])

    def erasure_receipts(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return list(self.request("GET", "/v1/erasure-receipts", params=params)["items"])

    def erasure_receipt(self, receipt_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/erasure-receipts/{receipt_id}"))

    def signing_keys(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/signing-keys"))

    def overdue_requests(self) -> Iterator[dict[str, Any]]:
        yield from self._paginate("/v1/forget-requests", {"overdue": True})

    def verify_audit_log(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/audit-events/verify"))

    def verify_audit_log_through(self, size: int) -> dict[str, Any]:
        """Recompute the chain up to ``seq == size``; ``head_hash`` is the hash there (compare it
        with a signed checkpoint's)."""
        return dict(self.request("GET", "/v1/audit-events/verify", params={"through": size}))

    def audit_checkpoints(self) -> Iterator[dict[str, Any]]:
        """The tenant's signed audit checkpoints, newest first."""
        yield from self._paginate("/v1/audit-checkpoints", {})

    def latest_audit_checkpoint(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/audit-checkpoints/latest"))

    def audit_events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """The tenant's audit history, oldest first; filters: action, subject_id, actor, since."""
        yield from self._paginate("/v1/audit-events", filters)

    def list_requests(self, **filters: Any) -> Iterator[dict[str, Any]]:
        yield from self._paginate("/v1/forget-requests", filters)

    # -- tenant administration (admin keys) ------------------------------------------------------
    def list_api_keys(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/api-keys")["items"])

    def create_api_key(self, role: str, name: str = "") -> dict[str, Any]:
        """Create a key; the returned ``key`` is its only appearance in plain text."""
        return dict(self.request("POST", "/v1/api-keys", json={"role": role, "name": name}))

    def revoke_api_key(self, key_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/v1/api-keys/{key_id}"))

    def tenant_settings(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/tenant/settings"))

    def patch_tenant_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PATCH", "/v1/tenant/settings", json=changes))

    def effective_settings(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/tenant/settings/effective"))

    def put_tenant_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PUT", "/v1/tenant/settings", json=settings))

    def download_weights(
        self, model_id: str, dest: str | Path, *, allow_uncertified: bool = False
    ) -> Path:
        dest = Path(dest)
        params = {"allow_uncertified": "true"} if allow_uncertified else {}
        with self._http.stream("GET", f"/v1/models/{model_id}/weights", params=params) as res:
            if res.status_code >= 400:
                res.read()
                self._check(res)
            tmp = dest.with_suffix(dest.suffix + ".part")
            with open(tmp, "wb") as fh:
                for chunk in res.iter_bytes(1024 * 1024):
                    fh.write(chunk)
            tmp.replace(dest)
        return dest

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float = 600,
        interval: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if job["state"] in TERMINAL_JOB_STATES:
                return job
            if time.monotonic() > deadline:
                raise LetheTimeout(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(interval)
