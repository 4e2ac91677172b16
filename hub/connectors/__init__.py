"""Channel connectors: ``base`` (the interface and registry) and one module per kind.
Importing this package registers them all."""

from . import simulators, webhook  # noqa: F401 - registration
from .base import Connector, Outbound, PermanentError, TransientError, channels, connector_for

__all__ = ["Connector", "Outbound", "PermanentError", "TransientError", "channels", "connector_for"]
