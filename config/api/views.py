"""Base API classes. Tenant scope lives here so no view can forget it."""

from rest_framework import permissions, viewsets

from .fast import fast_view
from .permissions import HasTenant

__all__ = ["HasTenant", "TenantScopedViewSet"]


class TenantScopedViewSet(viewsets.GenericViewSet):
    """A viewset whose objects all belong to the caller's tenant.

    Subclasses implement ``select(*, tenant, user)`` with a selector; every lookup
    (list, retrieve, update, delete) goes through it, so another tenant's object is a 404.
    ``tenant`` and ``user`` are always the authenticated caller's, never None.
    """

    permission_classes = [permissions.IsAuthenticated, HasTenant]
    # The keyset the cursor paginator orders by; actions may override it.
    cursor_ordering: tuple[str, ...] | None = None
    # POST actions served async on their success path: action name -> config.api.fast.FastPost.
    fast_posts: dict = {}

    @classmethod
    def as_view(cls, actions=None, **initkwargs):
        """DRF's view, served async on its hot paths (``config.api.fast``): the list when
        the viewset has an ``async def fast_list(request, user)``, a POST action named in
        ``fast_posts`` (action name -> ``FastPost``), and replays of an ``@idempotent``
        create."""
        view = super().as_view(actions, **initkwargs)
        actions = actions or {}
        fast_list = getattr(cls, "fast_list", None) if actions.get("get") == "list" else None
        post = getattr(cls, actions["post"], None) if "post" in actions else None
        fast_post = cls.fast_posts.get(actions["post"]) if "post" in actions else None
        return fast_view(view, get=fast_list, replay=getattr(post, "idempotent", False), post=fast_post)

    def select(self, *, tenant, user):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            # Schema generation: there is no caller, so no scope to select in; the schema
            # only needs the model (of ``serializer_class``, a ModelSerializer).
            return self.serializer_class.Meta.model._default_manager.none()
        user = self.request.user
        return self.select(tenant=user.tenant, user=user)
