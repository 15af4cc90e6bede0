"""A user can find what to forget: a dataset's training sample IDs and labels, paginated, and
the README's example IDs exist in the dataset the README registers."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests import digits
from tests.factories import TenantKeys

README = Path(__file__).resolve().parents[2] / "README.md"


def test_samples_are_listed_in_id_order_with_pages_and_a_label_filter(
    client: TestClient, acme: TenantKeys, digits_model_id: str
) -> None:
    model = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()
    url = f"/v1/datasets/{model['dataset_id']}/samples"
    first = client.get(url, params={"limit": 500}, headers=acme.headers()).json()
    second = client.get(
        url, params={"limit": 500, "after": first["next_after"]}, headers=acme.headers()
    ).json()
    third = client.get(
        url, params={"limit": 500, "after": second["next_after"]}, headers=acme.headers()
    ).json()
    ids = [s["sample_id"] for page in (first, second, third) for s in page["items"]]
    assert ids == sorted(digits.arrays()["sample_ids"].tolist()) and third["next_after"] is None
    threes = client.get(url, params={"label": 3, "limit": 10_000}, headers=acme.headers()).json()
    assert [s["sample_id"] for s in threes["items"]] == sorted(digits.sample_ids_of_class(3))

    # The README registers digits and forgets these IDs: they must be samples of it.
    example = re.search(r'"sample_ids": \[([\d, ]+)\]', README.read_text())
    assert example is not None
    wanted = {int(x) for x in example.group(1).split(",")}
    assert wanted <= set(ids)
