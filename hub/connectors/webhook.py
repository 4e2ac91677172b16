"""The real outbound-webhook connector: POSTs the message, signed like Meta's webhooks, to
the account's ``settings.url``. A 2xx answer means the endpoint has it: delivered."""

import json
from urllib.parse import urlsplit

import httpx

from ..http import http_client
from ..secrets import SIGNATURE_HEADER, signature_for
from .base import Connector, Outbound, PermanentError, TransientError, _common_settings, register, settings_error

TRANSIENT_STATUSES = {408, 425, 429}


@register
class WebhookConnector(Connector):
    channel = "webhook"

    def settings_validate(self, settings: dict) -> dict:
        clean = _common_settings(settings, allowed={"url"})
        url = settings.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
            raise settings_error("url", "an http(s) URL is required")
        return {**clean, "url": url}

    def send(self, outbound: Outbound) -> None:
        body = json.dumps(
            {
                "event": "message",
                "message": {**outbound.message, "external_id": outbound.external_id},
                "conversation": outbound.conversation,
                "contact": {"address": outbound.address, "name": outbound.contact_name},
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_for(body, outbound.secret),
            # The same on every attempt: the receiver can drop a repeat.
            "X-Hub-Delivery": outbound.external_id,
        }
        try:
            response = http_client().post(outbound.account_settings["url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"webhook unreachable: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        if response.status_code >= 500 or response.status_code in TRANSIENT_STATUSES:
            raise TransientError(f"webhook answered HTTP {response.status_code}")
        raise PermanentError(f"webhook refused the message: HTTP {response.status_code}")

    def after_sent(self, outbound: Outbound) -> None:
        from ..services import statuses

        statuses.message_status_advance(message_id=outbound.message["id"], to="delivered")
