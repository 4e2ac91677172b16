from django.core.management.base import CommandError

from accounts.models import Tenant


def tenant_from_option(value: str | None) -> Tenant | None:
    """``--tenant`` takes a slug or an id."""
    if not value:
        return None
    tenant = Tenant.objects.filter(slug=value).first()
    if tenant is None and value.isdigit():
        tenant = Tenant.objects.filter(pk=int(value)).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug or id {value!r}.")
    return tenant
