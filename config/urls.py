from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.admin import admin_login
from chat.urls import legacy_urlpatterns as legacy_chat_urls
from config.api import health

api_v1 = [
    path("", include("accounts.urls")),
    path("", include("audits.urls")),
    path("", include("conversations.urls")),
    path("", include("chat.urls")),
    path("", include("files.urls")),
    path("", include("hub.urls")),
]

# The schema and its docs page are public reading, not part of the per-IP auth budget.
urlpatterns = [
    re_path(r"^health/?$", health.health, name="health"),
    re_path(r"^health/ready/?$", health.ready, name="health-ready"),
    re_path(r"^metrics/?$", health.metrics, name="metrics"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(throttle_classes=[]), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema", throttle_classes=[]), name="swagger-ui"),
    path("api/v1/", include(api_v1)),
    path("api/", include(legacy_chat_urls)),
    # The admin login counts attempts per client IP (same budget as /api/v1/auth/token).
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("", TemplateView.as_view(template_name="chat/index.html"), name="chat-page"),
]

handler404 = "config.api.handlers.not_found"
handler500 = "config.api.handlers.server_error"
