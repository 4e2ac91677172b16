import secrets

from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.models import Tenant
from config.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Creates a tenant and its owner (audited like a registration) and prints an access and a "
        "refresh token for the owner. Without --password a strong one is generated and printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="The tenant's (organisation's) name.")
        parser.add_argument("--email", required=True, help="The owner's email (their login).")
        parser.add_argument("--password", help="The owner's password (checked by the password validators).")
        parser.add_argument("--display-name", default="", help="The owner's name (default: the email's local part).")
        parser.add_argument(
            "--tier", default=Tenant.Tier.FREE, choices=Tenant.Tier.values, help="Rate-limit tier (default: free)."
        )

    def handle(self, *args, name, email, password=None, display_name="", tier=Tenant.Tier.FREE, **options):
        generated = not password
        password = password or secrets.token_urlsafe(18)
        try:
            user, tenant = services.tenant_register(
                email=email,
                password=password,
                display_name=display_name or email.split("@", 1)[0],
                tenant_name=name,
                tier=tier,
            )
            tokens = services.tokens_for(user)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from exc
        self.stdout.write(f"tenant  {tenant.name} (slug {tenant.slug}, id {tenant.pk}, tier {tenant.tier})")
        self.stdout.write(f"owner   {user.email} (id {user.pk})")
        if generated:
            self.stdout.write(f"password {password}  (generated: shown once)")
        self.stdout.write(f"access  {tokens.access}")
        self.stdout.write(f"refresh {tokens.refresh}")
        self.stdout.write(self.style.SUCCESS("created 1 tenant and its owner"))
