"""The platforms' webhook payload shapes (WhatsApp Cloud API, Instagram messaging): what
the simulators build and what the inbound webhook parses, in one place, so both sides stay
the shapes the real platforms send."""

from dataclasses import dataclass

from config.core.errors import ApplicationError

# Each platform's text limit (characters) for an outbound message.
TEXT_LIMITS = {"whatsapp": 4096, "instagram": 1000}


@dataclass(frozen=True)
class InboundText:
    external_id: str  # the platform's message id (dedupe key)
    sender: str  # the contact's address
    text: str
    timestamp: int  # unix seconds
    name: str = ""


@dataclass(frozen=True)
class InboundStatus:
    external_id: str  # our message's id on the platform (Delivery.external_id)
    status: str  # sent | delivered | read | failed
    timestamp: int


@dataclass(frozen=True)
class InboundBatch:
    account_external_id: str
    messages: list[InboundText]
    statuses: list[InboundStatus]


def _bad(message: str, **details) -> ApplicationError:
    return ApplicationError(message, code="invalid_payload", status=400, details=details)


def _timestamp(value, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(f"{where}: timestamp must be unix seconds.", field=where) from None
    if number > 10**11:  # Instagram sends milliseconds
        number //= 1000
    return number


def _str(value, where: str) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _bad(f"{where} must be a non-empty string.", field=where)
    return value


def parse(channel: str, payload) -> InboundBatch:
    """The account id the payload names and its messages and statuses; ``invalid_payload``
    (400) for a shape the platform never sends. Every entry must name the same account."""
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list) or not payload["entry"]:
        raise _bad("The payload must be an object with a non-empty entry list.", field="entry")
    parser = {"whatsapp": _parse_whatsapp, "instagram": _parse_instagram}[channel]
    account_ids, messages, statuses = set(), [], []
    for entry in payload["entry"]:
        if not isinstance(entry, dict):
            raise _bad("entry[] items must be objects.", field="entry")
        parser(entry, account_ids, messages, statuses)
    if len(account_ids) != 1:
        raise _bad("The payload must name exactly one account.", field="entry")
    return InboundBatch(account_ids.pop(), messages, statuses)


def _parse_whatsapp(entry, account_ids, messages, statuses) -> None:
    changes = entry.get("changes")
    if not isinstance(changes, list):
        raise _bad("entry[].changes must be a list.", field="changes")
    for change in changes:
        value = change.get("value") if isinstance(change, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("metadata"), dict):
            raise _bad("changes[].value.metadata is required.", field="metadata")
        account_ids.add(_str(value["metadata"].get("phone_number_id"), "metadata.phone_number_id"))
        names = {}
        for contact in value.get("contacts") or []:
            if isinstance(contact, dict) and isinstance(contact.get("profile"), dict):
                names[str(contact.get("wa_id"))] = str(contact["profile"].get("name") or "")[:200]
        for item in value.get("messages") or []:
            if not isinstance(item, dict):
                raise _bad("messages[] items must be objects.", field="messages")
            text = item.get("text") if isinstance(item.get("text"), dict) else {}
            sender = _str(item.get("from"), "messages[].from")
            messages.append(
                InboundText(
                    external_id=_str(item.get("id"), "messages[].id"),
                    sender=sender,
                    text=_str(text.get("body"), "messages[].text.body"),
                    timestamp=_timestamp(item.get("timestamp"), "messages[].timestamp"),
                    name=names.get(sender, ""),
                )
            )
        for item in value.get("statuses") or []:
            if not isinstance(item, dict):
                raise _bad("statuses[] items must be objects.", field="statuses")
            statuses.append(
                InboundStatus(
                    external_id=_str(item.get("id"), "statuses[].id"),
                    status=_str(item.get("status"), "statuses[].status"),
                    timestamp=_timestamp(item.get("timestamp"), "statuses[].timestamp"),
                )
            )


def _parse_instagram(entry, account_ids, messages, statuses) -> None:
    account_ids.add(_str(str(entry.get("id") or ""), "entry[].id"))
    events = entry.get("messaging")
    if not isinstance(events, list):
        raise _bad("entry[].messaging must be a list.", field="messaging")
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("sender"), dict):
            raise _bad("messaging[] items must be objects with a sender.", field="messaging")
        timestamp = _timestamp(event.get("timestamp"), "messaging[].timestamp")
        if isinstance(event.get("message"), dict):
            message = event["message"]
            messages.append(
                InboundText(
                    external_id=_str(message.get("mid"), "message.mid"),
                    sender=_str(str(event["sender"].get("id") or ""), "sender.id"),
                    text=_str(message.get("text"), "message.text"),
                    timestamp=timestamp,
                )
            )
        for kind, status in (("delivery", "delivered"), ("read", "read")):
            report = event.get(kind)
            if isinstance(report, dict):
                mids = report.get("mids") or ([report["mid"]] if report.get("mid") else [])
                for mid in mids:
                    statuses.append(InboundStatus(_str(mid, f"{kind}.mid"), status, timestamp))


def whatsapp_statuses(*, phone_number_id: str, recipient: str, message_id: str, status: str, timestamp: int) -> dict:
    """A WhatsApp Cloud API status notification, as the platform posts it."""
    return whatsapp_statuses_batch(
        phone_number_id=phone_number_id, reports=[(message_id, recipient, status, timestamp)]
    )


def whatsapp_statuses_batch(*, phone_number_id: str, reports: list[tuple[str, str, str, int]]) -> dict:
    """One notification carrying several status reports of one phone number, as the Cloud
    API batches them (``value.statuses[]`` is a list): ``(message id, recipient, status,
    timestamp)`` each, in order."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": phone_number_id,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": phone_number_id, "phone_number_id": phone_number_id},
                            "statuses": [
                                {
                                    "id": message_id,
                                    "status": status,
                                    "timestamp": str(timestamp),
                                    "recipient_id": recipient,
                                }
                                for message_id, recipient, status, timestamp in reports
                            ],
                        },
                    }
                ],
            }
        ],
    }


def whatsapp_message(
    *, phone_number_id: str, sender: str, message_id: str, text: str, timestamp: int, name: str = ""
) -> dict:
    """A WhatsApp Cloud API inbound text message notification."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": phone_number_id,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": phone_number_id, "phone_number_id": phone_number_id},
                            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                            "messages": [
                                {
                                    "from": sender,
                                    "id": message_id,
                                    "timestamp": str(timestamp),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def instagram_report(*, account_id: str, recipient: str, message_id: str, status: str, timestamp: int) -> dict:
    """An Instagram messaging ``delivery`` or ``read`` event (timestamps in milliseconds)."""
    return instagram_reports_batch(account_id=account_id, reports=[(message_id, recipient, status, timestamp)])


def instagram_reports_batch(*, account_id: str, reports: list[tuple[str, str, str, int]]) -> dict:
    """One notification carrying several ``delivery`` / ``read`` events of one account
    (``entry[].messaging[]`` is a list): ``(message id, recipient, status, timestamp)``
    each, in order."""
    events = []
    for message_id, recipient, status, timestamp in reports:
        kind = "delivery" if status == "delivered" else "read"
        events.append(
            {
                "sender": {"id": recipient},
                "recipient": {"id": account_id},
                "timestamp": timestamp * 1000,
                kind: {"mids": [message_id]} if kind == "delivery" else {"mid": message_id},
            }
        )
    return {
        "object": "instagram",
        "entry": [{"id": account_id, "time": max(r[3] for r in reports) * 1000, "messaging": events}],
    }


def instagram_message(*, account_id: str, sender: str, message_id: str, text: str, timestamp: int) -> dict:
    return {
        "object": "instagram",
        "entry": [
            {
                "id": account_id,
                "time": timestamp * 1000,
                "messaging": [
                    {
                        "sender": {"id": sender},
                        "recipient": {"id": account_id},
                        "timestamp": timestamp * 1000,
                        "message": {"mid": message_id, "text": text},
                    }
                ],
            }
        ],
    }


# ---------------------------------------------------------------- outbound send requests
# What a real adapter POSTs to the platform's send endpoint; the simulators build the same
# bodies (and keep them, see ``SimulatorConnector.sent``) so tests see the shapes.


def whatsapp_send_text(*, to: str, text: str) -> dict:
    """WhatsApp Cloud API ``POST /{phone_number_id}/messages``, a text message."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": text},
    }


def whatsapp_send_media(*, to: str, kind: str, link: str, filename: str) -> dict:
    """A media message (``image`` / ``video`` / ``audio`` / ``document``) that the platform
    fetches from ``link``; a document carries its file name."""
    media = {"link": link}
    if kind == "document":
        media["filename"] = filename
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": kind, kind: media}


def instagram_send_text(*, recipient: str, text: str) -> dict:
    """Instagram messaging ``POST /me/messages``, a text message."""
    return {"recipient": {"id": recipient}, "message": {"text": text}}


def instagram_send_attachment(*, recipient: str, kind: str, url: str) -> dict:
    """An attachment (``image`` / ``video`` / ``audio`` / ``file``) fetched from ``url``."""
    return {"recipient": {"id": recipient}, "message": {"attachment": {"type": kind, "payload": {"url": url}}}}
