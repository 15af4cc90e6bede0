"""Every input the API accepts is bounded in its published contract: each string a path, query,
header or body field takes has a maxLength, each list a maxItems and each free-form object a
maxProperties, so a client knows the limits and an oversized value is a 422, not a big read."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import TenantKeys

# Strings whose format already bounds them.
_SELF_BOUNDED_FORMATS = {"uuid", "date-time", "date", "binary"}


def _unbounded(schema: dict[str, Any], where: str, components: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(s: dict[str, Any], path: str, seen: frozenset[str]) -> None:
        if "$ref" in s:
            name = s["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(components[name], path, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in s.get(key, []):
                walk(sub, path, seen)
        kind = s.get("type")
        if (
            kind == "string"
            and "maxLength" not in s
            and "enum" not in s
            and "const" not in s
            and s.get("format") not in _SELF_BOUNDED_FORMATS
        ):
            found.append(f"{path}: string without maxLength")
        if kind == "array":
            if "maxItems" not in s:
                found.append(f"{path}: array without maxItems")
            walk(s.get("items", {}), f"{path}[]", seen)
        if kind == "object" or "properties" in s:
            for name, sub in s.get("properties", {}).items():
                walk(sub, f"{path}.{name}", seen)
            free = s.get("additionalProperties", "properties" not in s)
            if free is not False and "maxProperties" not in s:
                found.append(f"{path}: object without maxProperties")

    walk(schema, where, frozenset())
    return found


def test_every_input_is_bounded_in_the_openapi_document(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    problems: list[str] = []
    for route, operations in spec["paths"].items():
        for method, op in operations.items():
            label = f"{method.upper()} {route}"
            for param in op.get("parameters", []):
                where = f"{label} {param['in']}:{param['name']}"
                problems += _unbounded(param.get("schema", {}), where, components)
            for ctype, content in op.get("requestBody", {}).get("content", {}).items():
                problems += _unbounded(content.get("schema", {}), f"{label} ({ctype})", components)
    assert problems == []


def test_an_oversized_id_is_refused_before_any_lookup(client: TestClient, acme: TenantKeys) -> None:
    headers = acme.headers("member")
    res = client.get("/v1/models/" + "x" * 65, headers=headers)
    assert res.status_code == 422
    assert res.headers["content-type"].startswith("application/problem+json")
    assert res.json()["errors"][0]["field"] == "path.model_id"
    res = client.get("/v1/jobs", params={"cursor": "c" * 513}, headers=headers)
    assert res.status_code == 422


def test_every_operation_has_examples_that_match_its_schemas(client: TestClient) -> None:
    """Request and response examples (recorded by .ci/openapi_examples.py from a real run) are
    on every JSON body and success response, and each still validates against its schema: a
    schema change that makes them stale fails here. Rerun the script to refresh them."""
    import jsonschema_rs

    spec = client.get("/openapi.json").json()
    missing, invalid = [], []

    def check(where: str, media: dict[str, Any]) -> None:
        if "example" not in media:
            missing.append(where)
            return
        root = {"components": spec["components"], **media.get("schema", {})}
        validator = jsonschema_rs.Draft202012Validator(root)
        errors = [e.message for e in validator.iter_errors(media["example"])][:3]
        if errors:
            invalid.append((where, errors))

    for route, operations in spec["paths"].items():
        for method, op in operations.items():
            label = f"{method.upper()} {route}"
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                check(f"{label} request", body)
            for code, response in op["responses"].items():
                media = response.get("content", {}).get("application/json")
                if media is not None and code.startswith("2"):
                    check(f"{label} {code}", media)
    assert missing == [] and invalid == []
