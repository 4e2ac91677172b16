from django.urls import re_path

from config.api.routers import Router

from . import views

router = Router()
router.register("users", views.UserViewSet, basename="user")

urlpatterns = [
    re_path(r"^auth/register/?$", views.RegisterView.as_view(), name="auth-register"),
    re_path(r"^auth/token/?$", views.TokenView.as_view(), name="auth-token"),
    re_path(r"^auth/token/refresh/?$", views.TokenRefreshView.as_view(), name="auth-token-refresh"),
    re_path(r"^auth/logout/?$", views.LogoutView.as_view(), name="auth-logout"),
    re_path(r"^auth/me/?$", views.MeView.as_view(), name="auth-me"),
    *router.urls,
]
