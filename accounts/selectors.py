from django.db.models import QuerySet

from .models import Tenant, User


def user_list(*, tenant: Tenant) -> QuerySet[User]:
    return User.objects.filter(tenant=tenant).select_related("tenant")


def tenant_find(value) -> Tenant | None:
    """A tenant named the way operators name one: its slug, or its id."""
    value = str(value or "").strip()
    if not value:
        return None
    tenant = Tenant.objects.filter(slug=value).first()
    if tenant is None and value.isdigit():
        tenant = Tenant.objects.filter(pk=int(value)).first()
    return tenant
