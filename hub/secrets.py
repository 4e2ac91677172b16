"""Channel-account secrets: made once, shown once, stored encrypted (they sign outbound and
verify inbound HMACs, so a hash would not do), and the signature both ways."""

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet
from django.conf import settings

SIGNATURE_HEADER = "X-Hub-Signature-256"


def _fernet() -> Fernet:
    key = hashlib.sha256(("hub-secrets:" + settings.HUB_SECRET_KEY).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def secret_new() -> str:
    return secrets.token_urlsafe(32)


def secret_encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def secret_decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def signature_for(body: bytes, secret: str) -> str:
    """Meta's convention: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, secret: str, header: str | None) -> bool:
    """Constant-time compare of ``header`` with the body's signature."""
    if not header:
        return False
    return hmac.compare_digest(signature_for(body, secret).encode(), header.strip().encode())
