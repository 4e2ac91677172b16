"""Message attachments: a message names files by id; what it stores and sends is their
descriptors (id, name, size, content_type, sha256, download_path).

Files stand above conversations, so this module does not import them: the files app
registers the resolver at start-up (``files.apps.FilesConfig.ready``). Without one, a
message naming attachments is refused.
"""

from collections.abc import Callable, Sequence

from config.core.errors import ApplicationError

# (tenant_id=, file_ids=) -> descriptors in the given order; raises ApplicationError (400)
# when any id is not a ready file of that tenant.
Resolver = Callable[..., list[dict]]

_resolver: Resolver | None = None


def attachment_resolver_set(resolver: Resolver | None) -> None:
    global _resolver
    _resolver = resolver


def attachments_resolve(*, tenant_id: int, file_ids: Sequence) -> list[dict]:
    """The stored form of a message's ``attachments`` (ids as the client sent them)."""
    if not file_ids:
        return []
    if _resolver is None:
        raise ApplicationError("Attachments are not available.", code="invalid_attachment")
    return _resolver(tenant_id=tenant_id, file_ids=list(file_ids))
