"""``agent_check``: one real turn against the configured provider, to see that it answers
and how fast, leaving nothing behind."""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from accounts.models import Tenant, User

from ..agent.providers import get_provider
from ..agent.runner import run_agent
from ..agent.types import ProviderError

CHECK_PROMPT = "add a task to check the agent"


class _Rollback(Exception):
    """Ends the check's transaction: its tenant, user and tasks are never committed."""


@dataclass
class AgentCheck:
    provider: str
    model: str
    ok: bool
    latency_ms: int
    first_delta_ms: int | None = None
    deltas: int = 0
    reply: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    error: str = ""


def agent_check(*, prompt: str = CHECK_PROMPT) -> AgentCheck:
    """Runs ``prompt`` through the tool loop with the configured provider (``local`` or
    ``openai`` at ``OPENAI_BASE_URL``), as a throwaway user whose tenant, tasks and every
    other row are rolled back afterwards: no audit record, no event, no message stays.
    Reports latency to the whole answer and to its first streamed piece; a provider
    failure is reported (``ok`` False, ``error``), not raised."""
    provider = get_provider()
    report = AgentCheck(provider=provider.name, model=provider.model, ok=False, latency_ms=0)
    started = time.perf_counter()

    def emit(kind: str, data: dict) -> None:
        if kind == "message.delta":
            if report.first_delta_ms is None:
                report.first_delta_ms = int((time.perf_counter() - started) * 1000)
            report.deltas += 1

    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(name="agent check", slug=f"agent-check-{time.time_ns()}")
            user = User.objects.create_user(email=f"{tenant.slug}@agent-check.invalid", tenant=tenant)
            started = time.perf_counter()
            try:
                result = run_agent(
                    provider=provider,
                    user=user,
                    history=[{"role": "user", "content": prompt}],
                    emit=emit,
                    max_rounds=settings.AGENT_MAX_TOOL_ROUNDS,
                )
            except ProviderError as exc:
                report.error = str(exc) or type(exc).__name__
            else:
                report.ok = True
                report.reply = result.content
                report.tool_calls = result.tool_calls
                report.usage = result.usage.as_dict()
            finally:
                report.latency_ms = int((time.perf_counter() - started) * 1000)
            raise _Rollback()
    except _Rollback:
        pass
    return report
