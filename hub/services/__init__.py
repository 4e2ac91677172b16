"""The hub's writes, one module per sub-domain: ``accounts`` (channel accounts),
``bindings`` (contacts and their conversations), ``statuses`` (the message status
lifecycle), ``deliveries`` (outbound routing, claim/lease, retries, sweep), ``inbound``
(signed webhooks), ``broadcast``."""
