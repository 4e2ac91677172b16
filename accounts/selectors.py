from django.db.models import QuerySet

from .models import Tenant, User


def user_list(*, tenant: Tenant) -> QuerySet[User]:
    return User.objects.filter(tenant=tenant).select_related("tenant")
