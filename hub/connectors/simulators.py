"""WhatsApp and Instagram simulators: each platform's text limit and payload shapes, a
configurable latency and failure rate, and statuses reported back through the inbound
webhook path, signed, as the platforms do (a real adapter changes only ``send``)."""

import json
import random
import time

import httpx
from django.conf import settings as django_settings
from django.utils import timezone

from .. import platforms
from ..secrets import SIGNATURE_HEADER, signature_for
from .base import Connector, Outbound, PermanentError, TransientError, _common_settings, register, settings_error


class SimulatorConnector(Connector):
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
        time.sleep(outbound.account_settings.get("latency_ms", 0) / 1000)
        if random.random() < outbound.account_settings.get("failure_rate", 0):  # noqa: S311 - a simulation
            raise TransientError(f"simulated {self.channel} error: HTTP 503 service unavailable")

    def after_sent(self, outbound: Outbound) -> None:
        report_status(outbound, "delivered")
        if outbound.account_settings.get("report_read"):
            report_status(outbound, "read")

    def status_payload(self, outbound: Outbound, status: str, timestamp: int) -> dict:
        raise NotImplementedError


@register
class WhatsAppSimulator(SimulatorConnector):
    channel = "whatsapp"

    def status_payload(self, outbound: Outbound, status: str, timestamp: int) -> dict:
        return platforms.whatsapp_statuses(
            phone_number_id=outbound.account_external_id,
            recipient=outbound.address,
            message_id=outbound.external_id,
            status=status,
            timestamp=timestamp,
        )


@register
class InstagramSimulator(SimulatorConnector):
    channel = "instagram"

    def status_payload(self, outbound: Outbound, status: str, timestamp: int) -> dict:
        return platforms.instagram_report(
            account_id=outbound.account_external_id,
            recipient=outbound.address,
            message_id=outbound.external_id,
            status=status,
            timestamp=timestamp,
        )


def report_status(outbound: Outbound, status: str) -> None:
    """The platform's signed status report, POSTed to our own inbound webhook when
    ``HUB_WEBHOOK_BASE_URL`` is set, else handed to the same service the view calls."""
    from ..connectors.base import connector_for

    payload = connector_for(outbound.channel).status_payload(outbound, status, int(timezone.now().timestamp()))
    body = json.dumps(payload).encode()
    signature = signature_for(body, outbound.secret)
    base = django_settings.HUB_WEBHOOK_BASE_URL
    if base:
        response = httpx.post(
            f"{base.rstrip('/')}/api/v1/channels/{outbound.channel}/webhook",
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
            timeout=django_settings.HUB_WEBHOOK_TIMEOUT_SECONDS,
            trust_env=False,
        )
        response.raise_for_status()
    else:
        from ..services import inbound

        inbound.webhook_receive(channel=outbound.channel, body=body, signature=signature)
