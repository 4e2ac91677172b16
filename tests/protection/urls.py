"""A creating endpoint for the idempotency tests: each call inserts a Tenant row, which has
no natural uniqueness, so only the Idempotency-Key stands between duplicates and two rows."""

import uuid

from django.urls import re_path
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Tenant
from config.api.idempotency import idempotent
from config.api.views import HasTenant
from config.urls import urlpatterns as base_patterns


class WidgetView(APIView):
    permission_classes = APIView.permission_classes + [HasTenant]

    @idempotent
    def post(self, request):
        if request.data.get("explode"):
            raise RuntimeError("the service fell over")
        if not request.data.get("name"):
            return Response({"error": {"code": "validation_error"}}, status=status.HTTP_400_BAD_REQUEST)
        row = Tenant.objects.create(name=request.data["name"], slug=uuid.uuid4().hex)
        return Response(
            {"id": row.pk, "name": row.name, "created_at": row.created_at},
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/test/widgets/{row.pk}"},
        )


urlpatterns = [re_path(r"^api/v1/test/widgets/?$", WidgetView.as_view()), *base_patterns]
