"""`GET /api/openapi.json` checked by openapi-spec-validator, and real answers of the
server checked against the schemas the document gives them."""

import json
import urllib.request

from openapi_schema_validator import OAS31Validator, validate as validate_instance
from openapi_spec_validator import validate as validate_spec

from conftest import api, create_post, like, register


def fetch_document(server) -> dict:
    with urllib.request.urlopen(server.base_url + "/api/openapi.json", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return json.load(resp)


def response_schema(doc: dict, method: str, path: str, status: int) -> dict:
    """The JSON schema of one documented answer, resolvable on its own."""
    op = doc["paths"][path][method.lower()]
    answer = op["responses"].get(str(status), op["responses"]["default"])
    schema = dict(answer["content"]["application/json"]["schema"])
    schema["components"] = doc["components"]
    return schema


def check(doc: dict, method: str, path: str, status: int, body) -> None:
    validate_instance(body, response_schema(doc, method, path, status), cls=OAS31Validator)


def test_the_document_is_a_valid_openapi_3_1_document(likewise):
    doc = fetch_document(likewise)
    assert doc["openapi"].startswith("3.1.")
    validate_spec(doc)
    for path in ("/api/posts/{id}/like", "/ws", "/socket.io/", "/api/realtime/tickets"):
        assert path in doc["paths"], path


def test_real_answers_match_their_documented_schemas(likewise):
    doc = fetch_document(likewise)
    status, session = api(likewise, "POST", "/api/users", body={"name": "alice", "password": "password123"})
    assert status == 201
    check(doc, "POST", "/api/users", 201, session)
    alice = {"id": session["user"]["id"], "token": session["token"]}
    bob = register(likewise, "bob")
    post = create_post(likewise, alice)
    check(doc, "PUT", "/api/posts/{id}/like", 200, like(likewise, bob, post))
    for path, documented in [
        (f"/api/posts/{post}", "/api/posts/{id}"),
        ("/api/posts", "/api/posts"),
        ("/api/notifications", "/api/notifications"),
        ("/api/users", "/api/users"),
        ("/api/me", "/api/me"),
    ]:
        status, body = api(likewise, "GET", path, alice["token"])
        assert status == 200, body
        check(doc, "GET", documented, 200, body)
    status, ticket = api(likewise, "POST", "/api/realtime/tickets", alice["token"])
    assert status == 200
    check(doc, "POST", "/api/realtime/tickets", 200, ticket)
    # Errors have the shape the document gives every operation.
    status, error = api(likewise, "GET", "/api/posts/999999", alice["token"])
    assert status == 404
    check(doc, "GET", "/api/posts/{id}", 404, error)
    status, error = api(likewise, "GET", "/api/me")
    assert status == 401
    check(doc, "GET", "/api/me", 401, error)
