from django.core.management.base import BaseCommand, CommandError

from accounts.selectors import tenant_find
from config.core.progress import Progress
from conversations import exports, selectors, services

FORMATS = ("jsonl", "markdown")


class Command(BaseCommand):
    help = (
        "Exports a tenant's conversations with their messages: JSON Lines (one conversation per line, "
        "the document GET .../export?format=json gives) or Markdown transcripts. Each exported "
        "conversation is recorded as conversation.exported on the tenant's audit trail."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The tenant (slug or id).")
        parser.add_argument("--format", default="jsonl", choices=FORMATS, help="jsonl (default) or markdown.")
        parser.add_argument("--output", default="-", help="File to write (default '-': standard output).")
        parser.add_argument("--status", help="Only conversations with this status (open, archived, closed).")

    def handle(self, *args, tenant, format="jsonl", output="-", status=None, **options):
        chosen = tenant_find(tenant)
        if chosen is None:
            raise CommandError(f"No tenant with slug or id {tenant!r}.")
        conversations = selectors.conversation_export_list(tenant=chosen, status=status)
        total = conversations.count()
        progress = Progress("exporting conversations", stream=self.stderr, enabled=options["verbosity"] > 0)
        try:
            stream = self.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror}") from exc
        exported = messages = 0
        try:
            for conversation in conversations.iterator(chunk_size=100):
                rows = list(selectors.message_export_list(conversation=conversation))
                if format == "jsonl":
                    stream.write(exports.conversation_jsonl_line(conversation=conversation, messages=rows))
                else:
                    if exported:
                        stream.write("\n---\n\n")
                    stream.write(exports.conversation_markdown(conversation=conversation, messages=rows))
                services.conversation_export_recorded(conversation=conversation, via="command")
                exported += 1
                messages += len(rows)
                progress(exported, total)
        finally:
            if stream is not self.stdout:
                stream.close()
        summary = f"exported {exported} conversation(s) with {messages} message(s) of tenant {chosen.slug} as {format}"
        where = "" if output == "-" else f" to {output}"
        if output == "-":  # the export itself is on stdout: the summary goes to stderr
            self.stderr.write(summary, style_func=lambda text: text)
        else:
            self.stdout.write(self.style.SUCCESS(summary + where))
