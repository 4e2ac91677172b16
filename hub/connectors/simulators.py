"""WhatsApp and Instagram simulators: each platform's text and media limits and payload
shapes, a configurable latency and failure rate, and statuses reported back through the
inbound webhook path, signed, as the platforms do (a real adapter changes only ``send``:
it POSTs the bodies ``send_requests`` builds instead of keeping them)."""

import json
import random
import threading
import time
from collections import deque
from typing import ClassVar

from django.conf import settings as django_settings
from django.utils import timezone

from .. import platforms
from ..http import ReportBatcher, http_client
from ..secrets import SIGNATURE_HEADER, signature_for
from .base import (
    Connector,
    MediaKind,
    Outbound,
    PermanentError,
    TransientError,
    _common_settings,
    media_kind_for,
    megabytes,
    register,
    settings_error,
)

# How many sends each simulator keeps (per process) for tests and operators to inspect.
SENT_KEPT = 200


class SimulatorConnector(Connector):
    # The media the platform takes; an attachment of another type or over its size fails
    # the delivery permanently (see docs/hub.md "Attachments" for the sources).
    MEDIA_KINDS: ClassVar[tuple[MediaKind, ...]] = ()

    def __init__(self) -> None:
        # (external_id, [request bodies]) of each accepted send, newest last.
        self.sent: deque[tuple[str, list[dict]]] = deque(maxlen=SENT_KEPT)
        self._lock = threading.Lock()

    def sent_requests(self, external_id: str) -> list[dict]:
        """The request bodies of the last send of this message id ([] if none kept)."""
        with self._lock:
            return next((bodies for eid, bodies in reversed(self.sent) if eid == external_id), [])

    def settings_validate(self, settings: dict) -> dict:
        clean = _common_settings(settings, allowed={"latency_ms", "failure_rate", "report_read"})
        latency = settings.get("latency_ms", 0)
        if isinstance(latency, bool) or not isinstance(latency, int) or not 0 <= latency <= 60_000:
            raise settings_error("latency_ms", "an integer from 0 to 60000")
        rate = settings.get("failure_rate", 0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise settings_error("failure_rate", "a number from 0 to 1")
        read = settings.get("report_read", False)
        if not isinstance(read, bool):
            raise settings_error("report_read", "must be true or false")
        return {**clean, "latency_ms": latency, "failure_rate": float(rate), "report_read": read}

    def send(self, outbound: Outbound) -> None:
        limit = platforms.TEXT_LIMITS[self.channel]
        if len(outbound.text) > limit:
            raise PermanentError(f"{self.channel} refuses text longer than {limit} characters")
        # Checked before anything goes out: the platform refuses the file whatever the attempt.
        requests = self.send_requests(outbound)
        time.sleep(outbound.account_settings.get("latency_ms", 0) / 1000)
        if random.random() < outbound.account_settings.get("failure_rate", 0):  # noqa: S311 - a simulation
            raise TransientError(f"simulated {self.channel} error: HTTP 503 service unavailable")
        with self._lock:
            self.sent.append((outbound.external_id, requests))

    def send_requests(self, outbound: Outbound) -> list[dict]:
        """The platform send requests for this message: the text, then one per attachment
        (each checked against ``MEDIA_KINDS``; ``PermanentError`` naming file and limit)."""
        requests = [self.text_request(outbound)]
        for attachment in outbound.attachments:
            kind = media_kind_for(self.channel, self.MEDIA_KINDS, attachment)
            requests.append(self.media_request(outbound, kind, attachment))
        return requests

    def text_request(self, outbound: Outbound) -> dict:
        raise NotImplementedError

    def media_request(self, outbound: Outbound, kind: MediaKind, attachment: dict) -> dict:
        raise NotImplementedError

    def after_sent(self, outbound: Outbound) -> None:
        """The platform's reports, ``delivered`` then ``read`` (when ``report_read``). Over
        HTTP (``HUB_WEBHOOK_BASE_URL`` set) they go from this process's reporter threads, as
        a platform reports on its own time: the delivery's slot is free once the message is
        ``sent`` instead of waiting on our web process; an account's reports that pile up
        while its last POST is on its way go together in one notification
        (``ReportBatcher``), ``read`` always after its ``delivered``. Embedded: in line."""
        if django_settings.HUB_WEBHOOK_BASE_URL:
            _batcher.add(_account_key(outbound), [(outbound, "delivered")])
        else:
            _report_all(outbound)

    def status_payload(self, outbound: Outbound, status: str, timestamp: int) -> dict:
        return self.status_payload_batch(outbound, [(outbound, status)], timestamp)

    def status_payload_batch(self, account: Outbound, reports: list[tuple[Outbound, str]], timestamp: int) -> dict:
        """One notification of ``account``'s (any of its outbounds) ``(outbound, status)``
        reports, in order."""
        raise NotImplementedError


@register
class WhatsAppSimulator(SimulatorConnector):
    """WhatsApp Cloud API: one media message per attachment, fetched by the platform from
    its ``link``. Limits from Meta's "Supported media types" (Cloud API reference)."""

    channel = "whatsapp"
    MEDIA_KINDS = (
        MediaKind("image", frozenset({"image/jpeg", "image/png"}), megabytes(5)),
        MediaKind("video", frozenset({"video/mp4", "video/3gpp", "video/3gp"}), megabytes(16)),
        MediaKind(
            "audio", frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}), megabytes(16)
        ),
        MediaKind(
            "document",
            frozenset(
                {
                    "text/plain",
                    "application/pdf",
                    "application/msword",
                    "application/vnd.ms-excel",
                    "application/vnd.ms-powerpoint",
                    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                }
            ),
            megabytes(100),
        ),
    )

    def text_request(self, outbound: Outbound) -> dict:
        return platforms.whatsapp_send_text(to=outbound.address, text=outbound.text)

    def media_request(self, outbound: Outbound, kind: MediaKind, attachment: dict) -> dict:
        return platforms.whatsapp_send_media(
            to=outbound.address, kind=kind.name, link=attachment["download_url"], filename=attachment["name"]
        )

    def status_payload_batch(self, account: Outbound, reports: list[tuple[Outbound, str]], timestamp: int) -> dict:
        return platforms.whatsapp_statuses_batch(
            phone_number_id=account.account_external_id,
            reports=[(o.external_id, o.address, status, timestamp) for o, status in reports],
        )


@register
class InstagramSimulator(SimulatorConnector):
    """Instagram messaging: ``message.attachment {type, payload.url}`` per attachment.
    Limits from Meta's Instagram messaging "Send a Message" and "Attachment Upload" pages."""

    channel = "instagram"
    MEDIA_KINDS = (
        MediaKind("image", frozenset({"image/png", "image/jpeg", "image/gif"}), megabytes(8)),
        MediaKind(
            "video",
            frozenset({"video/mp4", "video/ogg", "video/x-msvideo", "video/avi", "video/quicktime", "video/webm"}),
            megabytes(25),
        ),
        MediaKind(
            "audio",
            frozenset({"audio/aac", "audio/mp4", "audio/x-m4a", "audio/m4a", "audio/wav", "audio/x-wav", "audio/wave"}),
            megabytes(25),
        ),
        MediaKind("file", frozenset({"application/pdf"}), megabytes(25)),
    )

    def text_request(self, outbound: Outbound) -> dict:
        return platforms.instagram_send_text(recipient=outbound.address, text=outbound.text)

    def media_request(self, outbound: Outbound, kind: MediaKind, attachment: dict) -> dict:
        return platforms.instagram_send_attachment(
            recipient=outbound.address, kind=kind.name, url=attachment["download_url"]
        )

    def status_payload_batch(self, account: Outbound, reports: list[tuple[Outbound, str]], timestamp: int) -> dict:
        return platforms.instagram_reports_batch(
            account_id=account.account_external_id,
            reports=[(o.external_id, o.address, status, timestamp) for o, status in reports],
        )


def _account_key(outbound: Outbound) -> tuple[str, str, str]:
    """What one notification is for: the channel, the account's platform id, its secret."""
    return (outbound.channel, outbound.account_external_id, outbound.secret)


def _report_batch(key: tuple[str, str, str], reports: list[tuple[Outbound, str]]) -> list[tuple[Outbound, str]]:
    """``ReportBatcher``'s post: one signed notification of the account's reports; returns
    the ``read`` reports that follow the ``delivered`` ones of accounts with ``report_read``."""
    _post_signed(reports[0][0], reports)
    return [(outbound, "read") for outbound, status in reports if status == "delivered" and _reads(outbound)]


_batcher = ReportBatcher(_report_batch)


def _reads(outbound: Outbound) -> bool:
    return bool(outbound.account_settings.get("report_read"))


def _report_all(outbound: Outbound) -> None:
    """Embedded (no ``HUB_WEBHOOK_BASE_URL``): the reports in line, one at a time."""
    report_status(outbound, "delivered")
    if _reads(outbound):
        report_status(outbound, "read")


def report_status(outbound: Outbound, status: str) -> None:
    """The platform's signed status report, POSTed to our own inbound webhook when
    ``HUB_WEBHOOK_BASE_URL`` is set, else handed to the same service the view calls."""
    _post_signed(outbound, [(outbound, status)])


def _post_signed(account: Outbound, reports: list[tuple[Outbound, str]]) -> None:
    from ..connectors.base import connector_for

    payload = connector_for(account.channel).status_payload_batch(account, reports, int(timezone.now().timestamp()))
    body = json.dumps(payload).encode()
    signature = signature_for(body, account.secret)
    base = django_settings.HUB_WEBHOOK_BASE_URL
    if base:
        response = http_client().post(
            f"{base.rstrip('/')}/api/v1/channels/{account.channel}/webhook",
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
        )
        response.raise_for_status()
    else:
        from ..services import inbound

        inbound.webhook_receive(channel=account.channel, body=body, signature=signature)
