"""Fixtures of the hub's tests: a tenant owner's channel accounts (with their one-time
secret), signed webhook posts, and a real HTTP receiver on 127.0.0.1."""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hub.secrets import SIGNATURE_HEADER, signature_for
from hub.services import accounts, inbound

WEBHOOK_HEADER = "HTTP_" + SIGNATURE_HEADER.upper().replace("-", "_")


@dataclass
class Connected:
    account: object
    secret: str


def connect(user, *, channel="whatsapp", external_id="15550001111", settings=None, name="Support") -> Connected:
    account, secret = accounts.channel_account_create(
        user=user, channel=channel, name=name, external_id=external_id, settings=settings or {}
    )
    return Connected(account, secret)


@pytest.fixture(autouse=True)
def _no_webhook_keys_between_tests():
    """The web process's kept account keys (``inbound.webhook_keys``) start empty in each
    test: accounts of earlier tests (rolled back) had the same external ids."""
    inbound.webhook_keys.clear()
    yield
    inbound.webhook_keys.clear()


@pytest.fixture
def whatsapp(user):
    return connect(user, settings={"report_read": True})


@pytest.fixture
def instagram(user):
    return connect(user, channel="instagram", external_id="17841400000000001")


def signed_post(api, channel: str, payload, secret: str | None, *, signature: str | None = None):
    """POSTs ``payload`` to the channel's webhook, signed with ``secret`` (or with the given
    ``signature`` header; neither: unsigned)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {}
    if signature is not None:
        headers[WEBHOOK_HEADER] = signature
    elif secret is not None:
        headers[WEBHOOK_HEADER] = signature_for(body, secret)
    return api.post(f"/api/v1/channels/{channel}/webhook", data=body, content_type="application/json", **headers)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 standing for a customer's webhook endpoint: it
    verifies each request's signature and answers the next status in ``answers`` (then 200)."""

    secret: str = ""
    answers: list[int] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/messages"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                valid = self.headers.get(SIGNATURE_HEADER) == signature_for(body, receiver.secret)
                receiver.received.append(
                    {"body": json.loads(body), "valid": valid, "delivery": self.headers.get("X-Hub-Delivery")}
                )
                status = receiver.answers.pop(0) if receiver.answers else 200
                if not valid:
                    status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()
