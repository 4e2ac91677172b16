import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from chat.services.checks import CHECK_PROMPT, agent_check


class Command(BaseCommand):
    help = (
        "Runs one turn against the configured agent provider (AGENT_PROVIDER: local, or openai at "
        "OPENAI_BASE_URL) with its tools, as a throwaway user rolled back afterwards, and reports "
        "whether it answered and its latency. Exits with an error when the provider fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--prompt", default=CHECK_PROMPT, help=f"What to ask (default: {CHECK_PROMPT!r}).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the report as one JSON object.")

    def handle(self, *args, prompt=CHECK_PROMPT, as_json=False, **options):
        report = agent_check(prompt=prompt)
        if as_json:
            self.stdout.write(_dumps(asdict(report)))
        else:
            first = f"{report.first_delta_ms} ms" if report.first_delta_ms is not None else "—"
            self.stdout.write(f"provider   {report.provider} ({report.model})")
            self.stdout.write(
                f"latency    {report.latency_ms} ms (first streamed piece after {first}, {report.deltas} pieces)"
            )
            for call in report.tool_calls:
                self.stdout.write(f"tool call  {call['name']} {_dumps(call['arguments'])}")
            if report.ok:
                self.stdout.write(f"reply      {report.reply[:200]}")
                self.stdout.write(self.style.SUCCESS(f"ok: {report.provider} answered in {report.latency_ms} ms"))
        if not report.ok:
            raise CommandError(f"{report.provider} did not answer after {report.latency_ms} ms: {report.error}")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)
