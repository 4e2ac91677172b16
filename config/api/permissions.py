"""Permissions shared by the API views (``config.api.views``) and the async fast paths
(``config.api.fast``), which must know which ones an authenticated caller passes."""

from rest_framework import permissions


class HasTenant(permissions.BasePermission):
    message = "This account does not belong to a tenant."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.tenant_id)
