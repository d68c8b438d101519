"""The OpenAPI document shows a client a worked example of every request body
and every successful JSON answer, and each example fits its own schema.

The app is the one ``test_api_rbac`` builds (every router, GraphQL included),
so a route added later is held to the same rule. Examples are validated with
``jsonschema_rs`` (the validator schemathesis ships with) against the
document's own components, so a ``$ref`` resolves as a client resolves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest

from cryptodesk.api import ledger_examples as lx
from tests.unit._ledger_api import HEADER
from tests.unit.test_api_rbac import Env, env, template

__all__ = ["env", "template"]  # the fixtures the tests below take

SUCCESS = ("200", "201", "202")
JSON = "application/json"


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _examples(doc: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    """The examples a client sees for one media type: the operation's own, else
    its schema's (through a ``$ref``)."""
    if "example" in media:
        return [media["example"]]
    if "examples" in media:
        return [e["value"] for e in media["examples"].values() if "value" in e]
    return _schema_examples(doc, media.get("schema", {}))


def _schema_examples(doc: dict[str, Any], schema: dict[str, Any]) -> list[Any]:
    """A schema's own examples; for a list, one list of its item's; for a
    union, its members' (an optional body is ``anyOf`` the model and null)."""
    schema = _resolve(doc, schema)
    if "examples" in schema:
        return list(schema["examples"])
    if "example" in schema:
        return [schema["example"]]
    if schema.get("type") == "array" and "items" in schema:
        return [[e] for e in _schema_examples(doc, schema["items"])]
    members = schema.get("anyOf", []) + schema.get("oneOf", [])
    return [e for member in members for e in _schema_examples(doc, member)]


def _bodies(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(operation, media type, media object) of each request body and each
    successful JSON response."""
    for path, item in doc["paths"].items():
        for method, op in item.items():
            label = f"{method.upper()} {path}"
            for media_type, media in op.get("requestBody", {}).get("content", {}).items():
                yield f"{label} request", media_type, media
            for status in SUCCESS:
                content = op.get("responses", {}).get(status, {}).get("content", {})
                if JSON in content:
                    yield f"{label} {status}", JSON, content[JSON]


def _validate(
    doc: dict[str, Any], schema: dict[str, Any], example: Any
) -> list[tuple[str, str | None]]:
    """Each error's message, and the property it names when the error is a
    missing required property whose schema admits null."""
    # The document is the root so "#/components/schemas/..." resolves in place.
    root = {**schema, "components": doc.get("components", {})}
    validator = jsonschema_rs.Draft202012Validator(root)
    errors: list[tuple[str, str | None]] = []
    for error in validator.iter_errors(example):
        where = f"{list(error.instance_path)}: {error.message}"
        errors.append((where, _missing_nullable(doc, root, error)))
    return errors


def _missing_nullable(doc: dict[str, Any], root: dict[str, Any], error: Any) -> str | None:
    if not isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
        return None
    node: Any = root
    for part in error.schema_path[:-1]:  # down to the object schema that lists "required"
        if part != "$ref":  # each step below resolves a reference already
            node = _resolve(doc, node[part])
    prop = error.kind.property
    members = node["properties"][prop].get("anyOf", [])
    return str(prop) if {"type": "null"} in members else None


def _is_text(media_type: str) -> bool:
    return media_type.startswith("text/")


async def test_every_request_body_and_successful_json_answer_has_an_example(env: Env) -> None:
    doc = env.app.openapi()
    bodies = list(_bodies(doc))
    assert len(bodies) >= 45
    missing = [f"{where} ({media_type})" for where, media_type, media in bodies
               if not _examples(doc, media)]  # fmt: skip
    assert missing == []


def _invalid(doc: dict[str, Any]) -> tuple[int, list[tuple[str, str, str | None]]]:
    """How many examples were checked, and each validation error as (where,
    message, the missing property when the error is one whose schema admits null)."""
    errors: list[tuple[str, str, str | None]] = []
    checked = 0
    for where, media_type, media in _bodies(doc):
        schema = media.get("schema", {})
        for example in _examples(doc, media):
            checked += 1
            if _is_text(media_type):
                # A text body (the CSV import) is a string; there is no JSON to check.
                assert isinstance(example, str), where
                continue
            errors += [(where, message, nullable) for message, nullable
                       in _validate(doc, schema, example)]  # fmt: skip
    return checked, errors


# FastAPI's get_openapi encodes the document with jsonable_encoder(exclude_none=True),
# which also drops every null-valued key inside an example: an example whose model
# has a required nullable field (``next_cursor: str | None``) loses that key and so
# no longer fits. The app must restore them (in ``app._openapi``); until it does the
# full check fails, and the one below proves that this is the only thing wrong.
async def test_every_example_validates_against_its_schema(env: Env) -> None:
    doc = env.app.openapi()
    checked, errors = _invalid(doc)
    assert checked >= 60
    assert [f"{where}: {message}" for where, message, _ in errors] == []


async def test_examples_fit_their_schemas_but_for_the_nulls_fastapi_drops(env: Env) -> None:
    doc = env.app.openapi()
    checked, errors = _invalid(doc)
    assert checked >= 60
    assert [f"{where}: {message}" for where, message, nullable in errors if not nullable] == []


def _shape(value: Any) -> Any:
    """The keys of a JSON value, all the way down (lists by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


async def test_the_ledger_examples_are_what_the_api_accepts_and_answers(env: Env) -> None:
    """Sent as documented, the write examples answer exactly the documented
    answers: the examples are this API's values, not made-up ones."""
    async with env.client("acme", "admin") as client:
        for body in (lx.EXCHANGE_ACCOUNT_IN, lx.WALLET_ACCOUNT_IN, lx.MANUAL_ACCOUNT_IN):
            r = await client.post("/api/v1/accounts", json=body)
            assert r.status_code == 201, r.text
            assert {k: r.json()[k] for k in body} == body
        r = await client.post("/api/v1/ledger", json=lx.ENTRY_IN)
        assert (r.status_code, r.json()) == (201, lx.ENTRY)
        r = await client.post("/api/v1/ledger/t-2024-0001/reverse", json=lx.REVERSE_IN)
        assert (r.status_code, r.json()) == (201, lx.REVERSAL)
        headers = {"content-type": "text/csv"}
        r = await client.post("/api/v1/ledger/import", content=lx.LEDGER_CSV, headers=headers)
        assert (r.status_code, r.json()) == (200, lx.IMPORTED)
        r = await client.put("/api/v1/accounts/cold-wallet/balances", json=lx.BALANCES_IN)
        assert (r.status_code, r.json()) == (200, lx.BALANCES)
        r = await client.get("/api/v1/portfolio")
        assert r.status_code == 200, r.text
        assert set(r.json()) == set(lx.PORTFOLIO)
        r = await client.post("/api/v1/graphql", json=lx.GRAPHQL_QUERY)
        assert r.status_code == 200, r.text
        assert _shape(r.json()) == _shape(lx.GRAPHQL_DATA)


async def test_the_csv_import_example_has_the_documented_header(env: Env) -> None:
    doc = env.app.openapi()
    content = doc["paths"]["/api/v1/ledger/import"]["post"]["requestBody"]["content"]
    assert _examples(doc, content["text/csv"]) == [lx.LEDGER_CSV]
    assert lx.LEDGER_CSV.splitlines(keepends=True)[0] == HEADER


@pytest.mark.parametrize(
    ("where", "example"), [("request", lx.GRAPHQL_QUERY), ("200", lx.GRAPHQL_DATA)]
)
async def test_the_graphql_operation_shows_a_query_and_its_answer(
    env: Env, where: str, example: dict[str, Any]
) -> None:
    op = env.app.openapi()["paths"]["/api/v1/graphql"]["post"]
    media = op["requestBody"] if where == "request" else op["responses"]["200"]
    assert media["content"][JSON]["example"] == example
