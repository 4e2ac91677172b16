"""The one small interface every channel connector implements, and the registry that finds
one by channel. Adding a channel is one class with ``@register``."""

from dataclasses import dataclass
from typing import ClassVar

from config.core.errors import ApplicationError


class TransientError(Exception):
    """The platform may take it later (timeout, 5xx, rate limited): retried with backoff."""


class PermanentError(Exception):
    """The platform will never take this message (too long, refused): the message fails."""


@dataclass(frozen=True)
class Outbound:
    """What a connector needs to send one message, with no database access of its own."""

    delivery_id: int
    external_id: str  # our id of the message on the platform: the same on every attempt
    channel: str
    account_external_id: str
    account_settings: dict
    secret: str
    address: str
    contact_name: str
    text: str
    message: dict  # the message as the API renders it (its attachments with ``download_url``)
    conversation: dict
    # The message's attachment descriptors (id, name, size, content_type, sha256,
    # download_path) plus ``download_url``: absolute when HUB_WEBHOOK_BASE_URL is set.
    attachments: tuple[dict, ...] = ()


@dataclass(frozen=True)
class MediaKind:
    """One kind of media a platform takes: its name in the platform's payload, the content
    types it accepts and its largest size in bytes."""

    name: str
    content_types: frozenset[str]
    max_bytes: int


def megabytes(n: int) -> int:
    """The platforms write their limits in MB; read as decimal megabytes, the smaller
    reading, so a file we send is never over the platform's limit."""
    return n * 1000 * 1000


def media_kind_for(channel: str, kinds: tuple[MediaKind, ...], attachment: dict) -> MediaKind:
    """The kind the platform sends ``attachment`` as; ``PermanentError`` naming the file and
    the limit when its type is not taken or it is too large (no retry can fix either)."""
    name = attachment.get("name") or attachment.get("id") or "?"
    size, content_type = attachment.get("size"), attachment.get("content_type")
    # Messages stored before files existed may hold free-form attachments: not sendable.
    if isinstance(size, bool) or not isinstance(size, int) or not isinstance(content_type, str):
        raise PermanentError(f"{channel} cannot send attachment '{name}': it names no file size and type")
    base_type = content_type.split(";")[0].strip().lower()
    kind = next((k for k in kinds if base_type in k.content_types), None)
    if kind is None:
        accepted = ", ".join(sorted(t for k in kinds for t in k.content_types))
        raise PermanentError(
            f"{channel} does not take attachment '{name}' of type {content_type} (accepted: {accepted})"
        )
    if size > kind.max_bytes:
        raise PermanentError(
            f"{channel} refuses attachment '{name}': {size} bytes is over its {kind.name} limit of "
            f"{kind.max_bytes // 1_000_000} MB ({kind.max_bytes} bytes)"
        )
    return kind


class Connector:
    channel: ClassVar[str]

    def settings_validate(self, settings: dict) -> dict:
        """The account's settings, checked and normalised; ``validation_error`` otherwise."""
        return _common_settings(settings, allowed=set())

    def send(self, outbound: Outbound) -> None:
        """Hands the message to the platform; raises ``TransientError`` or ``PermanentError``."""
        raise NotImplementedError

    def after_sent(self, outbound: Outbound) -> None:
        """Runs once the ``sent`` status is committed (a simulator reports statuses back)."""


_registry: dict[str, Connector] = {}


def register(cls: type[Connector]) -> type[Connector]:
    _registry[cls.channel] = cls()
    return cls


def connector_for(channel: str) -> Connector:
    return _registry[channel]


def channels() -> list[str]:
    return sorted(_registry)


def settings_error(field: str, message: str) -> ApplicationError:
    return ApplicationError(
        f"settings.{field}: {message}", code="validation_error", details={"settings": {field: [message]}}
    )


def _common_settings(settings, *, allowed: set[str]) -> dict:
    """Every channel takes ``agent_enabled`` (bool, default true: the agent answers contacts)."""
    if not isinstance(settings, dict):
        raise ApplicationError("settings must be an object.", code="validation_error", details={"settings": ["object"]})
    unknown = sorted(set(settings) - allowed - {"agent_enabled"})
    if unknown:
        raise settings_error(unknown[0], "unknown setting")
    agent = settings.get("agent_enabled", True)
    if not isinstance(agent, bool):
        raise settings_error("agent_enabled", "must be true or false")
    return {"agent_enabled": agent}
