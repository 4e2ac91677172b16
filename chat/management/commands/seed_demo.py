from django.core.management.base import BaseCommand, CommandError

from chat.services import demo
from config.core.errors import ApplicationError

DEFAULT_PASSWORD = "try-the-demo-chat-1"


class Command(BaseCommand):
    help = (
        "Creates a demo tenant with an owner and a member and a few conversations answered by the "
        "offline agent (tasks included). Idempotent: run it again and it creates only what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            default=DEFAULT_PASSWORD,
            help=f"Password of the demo users when created ({DEFAULT_PASSWORD!r}).",
        )

    def handle(self, *args, password=DEFAULT_PASSWORD, **options):
        try:
            created = demo.demo_seed(password=password)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from exc
        made = ", ".join(f"{count} {name}" for name, count in created.items())
        if any(created.values()):
            self.stdout.write(self.style.SUCCESS(f"created {made}"))
        else:
            self.stdout.write("the demo is already there: created nothing")
        self.stdout.write(f"sign in at / as {demo.DEMO_OWNER} or {demo.DEMO_MEMBER}")
