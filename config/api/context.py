"""Moved to ``config.core.context`` (no HTTP in it); these names stay importable from here
until the imports are updated."""

from config.core.context import (  # noqa: F401 - re-exported
    client_ip_var,
    current_request_id,
    new_request_id,
    request_id_var,
    tenant_id_var,
    user_agent_var,
    user_id_var,
)
