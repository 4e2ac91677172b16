"""Base API classes. Tenant scope lives here so no view can forget it."""

from rest_framework import permissions, viewsets


class HasTenant(permissions.BasePermission):
    message = "This account does not belong to a tenant."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.tenant_id)


class TenantScopedViewSet(viewsets.GenericViewSet):
    """A viewset whose objects all belong to the caller's tenant.

    Subclasses implement ``select(*, tenant, user)`` with a selector; every lookup
    (list, retrieve, update, delete) goes through it, so another tenant's object is a 404.
    """

    permission_classes = [permissions.IsAuthenticated, HasTenant]
    # The keyset the cursor paginator orders by; actions may override it.
    cursor_ordering: tuple[str, ...] | None = None

    def select(self, *, tenant, user):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no caller, no rows
            return self.select(tenant=None, user=None).none()
        user = self.request.user
        return self.select(tenant=user.tenant, user=user)
