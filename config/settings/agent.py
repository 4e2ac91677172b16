"""The agent: its provider (local or OpenAI-compatible), its limits, and how its runs are
retried, swept and relayed."""

from .env import env

# The agent. "local" is the offline task assistant; "openai" uses the official client
# against OpenAI or any compatible server. Defaults to openai when a key is set.
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
# Any OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
# Seconds one model call may take before the turn fails (503 agent_unavailable).
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=30.0)
AGENT_PROVIDER = env.str("AGENT_PROVIDER", default="openai" if OPENAI_API_KEY else "local")
# Tool rounds one turn may take before the model must answer in words.
AGENT_MAX_TOOL_ROUNDS = env.int("AGENT_MAX_TOOL_ROUNDS", default=5)
# Characters of conversation history fed to the model (newest first, whole messages).
AGENT_HISTORY_CHARS = env.int("AGENT_HISTORY_CHARS", default=16000)
# Attempts a turn gets on Celery (transient provider errors, lost workers) before it fails.
AGENT_MAX_ATTEMPTS = env.int("AGENT_MAX_ATTEMPTS", default=3)
# First retry delay in seconds; doubles with each attempt.
AGENT_RETRY_BACKOFF_SECONDS = env.float("AGENT_RETRY_BACKOFF_SECONDS", default=2.0)
# A run still queued after this many seconds lost its task and is queued again by the sweep.
AGENT_STALE_QUEUED_SECONDS = env.int("AGENT_STALE_QUEUED_SECONDS", default=900)

# Seconds between relays of runs whose enqueue failed (broker down when they were stored).
AGENT_RELAY_SECONDS = env.float("AGENT_RELAY_SECONDS", default=5.0)
