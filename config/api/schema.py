"""OpenAPI: document the error envelope and the error statuses of the public contract.

drf-spectacular only knows the success response of each operation. Every API error has one
shape (``{"error": {code, message, details, request_id}}``, see ``config.api.errors``); this
postprocessing hook adds it as the ``ErrorEnvelope`` component and, per operation, the statuses
the contract says it can answer with:

- 400 validation, when the operation takes a body or query/header parameters (a body that
  is not strict JSON is ``parse_error``, a forged ``?cursor=`` is ``invalid_cursor``);
- 401 unauthenticated, everywhere (a missing, bad or expired bearer token, or bad credentials);
- 403 forbidden, on operations that need a token (roles, another user's path);
- 404 not found, when the path names an object (also another tenant's), and on the chat
  operations, whose body may name an unknown or foreign conversation;
- 413 too large, when the operation takes a body;
- 409 conflict and 422 mismatch, on operations taking an ``Idempotency-Key``;
- 429 rate limited, everywhere (per tenant, or per IP for the auth endpoints).
"""

ERROR_COMPONENT = "ErrorEnvelope"

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": {}},
                "request_id": {"type": "string"},
            },
            "required": ["code", "message", "details", "request_id"],
        }
    },
    "required": ["error"],
}

DESCRIPTIONS = {
    "400": "Validation error (validation_error), body not strict JSON (parse_error), or a forged cursor (invalid_cursor)",
    "401": "Unauthenticated",
    "403": "Forbidden",
    "404": "Not found",
    "409": (
        "Conflict (the same Idempotency-Key is still being processed, the resource exists: email_taken, "
        "or a file's state: chunk_conflict, chunk_in_progress, upload_incomplete, file_not_uploading, file_not_ready)"
    ),
    "413": "Request body too large (also a file or chunk over its limit, or the tenant's quota)",
    "415": "Content type not accepted",
    "416": "Range not satisfiable",
    "422": "Idempotency-Key reused with a different body, or a file's checksum or size mismatch",
    "429": "Rate limited (see Retry-After)",
}

METHODS = ("get", "put", "post", "patch", "delete")

# Statuses that nothing in the operation's shape announces.
EXTRA_STATUSES = {
    "chat_create": ["404"],
    "chat_legacy_create": ["404"],
    # An account with this email exists (email_taken), or the tenant name is contended.
    "auth_register": ["409"],
    "users_create": ["409"],
    # Files (files/views.py): declared type refused; chunk and file states; checksum; Range.
    "files_create": ["415"],
    "files_chunks_update": ["409"],
    "files_complete_create": ["409", "422"],
    "files_content_retrieve": ["409", "416"],
    # The body names channel accounts (hub): one not of the caller's tenant is 404.
    "conversations_create": ["404"],
    "messages_broadcast_create": ["404"],
}


def _error_statuses(operation: dict) -> list[str]:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses = ["401", "429"]
    if has_body or any(p["in"] in ("query", "header") for p in parameters):
        statuses.append("400")
    if any(requirement for requirement in operation.get("security", [])):
        statuses.append("403")
    if any(p["in"] == "path" for p in parameters):
        statuses.append("404")
    if has_body:
        statuses.append("413")
    if any(p["in"] == "header" and p["name"].lower() == "idempotency-key" for p in parameters):
        statuses += ["409", "422"]
    statuses += EXTRA_STATUSES.get(operation.get("operationId"), [])
    return sorted(set(statuses))


def document_errors(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry: see the module docstring."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    reference = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for path_item in result.get("paths", {}).values():
        for method in METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in _error_statuses(operation):
                responses.setdefault(
                    status,
                    {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": reference}}},
                )
    return result
