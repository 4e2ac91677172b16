from rest_framework import permissions


class IsTenantAdmin(permissions.BasePermission):
    message = "Only tenant owners and admins may do this."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_tenant_admin)
