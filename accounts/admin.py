from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import BaseUserCreationForm
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponse
from django.utils.html import escape

from config.admin_tools import seconds
from config.api.ratelimit import client_ip_usage

from . import services
from .models import Tenant, User


class AuditedAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, audited like ``POST /api/v1/auth/token``: a failure is an
    ``auth.login_failed`` record (reason ``bad_password``, ``inactive``, ``unknown_email``,
    or ``not_staff`` for a right password on an account that may not use the admin), a
    success an ``auth.login`` record with ``via: admin``."""

    def clean_username(self):
        # Emails are stored lower-cased (as the API login looks them up).
        return (self.cleaned_data.get("username") or "").strip().lower()

    def clean(self):
        try:
            cleaned = super().clean()
        except ValidationError:
            email = self.cleaned_data.get("username") or ""
            not_staff = self.user_cache is not None and not self.user_cache.is_staff
            services.auth_login_failed(email=email, reason="not_staff" if not_staff else None)
            raise
        if self.user_cache is not None:
            services.auth_login_recorded(user=self.user_cache, via="admin")
        return cleaned


admin.site.login_form = AuditedAdminAuthenticationForm


def admin_login(request, extra_context=None):
    """``/admin/login/``: each attempt (POST) counts against the client IP's budget shared
    with the API's auth endpoints (``RATE_LIMIT_AUTH_PER_IP``). Over it, a 429 page with
    ``Retry-After``, before the form runs: no password is hashed, nothing is recorded."""
    if request.method == "POST":
        usage = client_ip_usage(request)
        request.rate_limit_usage = usage
        if usage.limited:
            return usage.apply(
                HttpResponse(
                    "<!doctype html><title>Too many login attempts</title>"
                    f"<h1>Too many login attempts</h1><p>Try again in {escape(usage.retry_after)} seconds.</p>",
                    status=429,
                )
            )
    return admin.site.login(request, extra_context)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tier", "is_active", "member_count", "created"]
    list_filter = ["tier", "is_active"]
    search_fields = ["name", "slug"]
    fields = ["name", "slug", "tier", "is_active", "member_count", "created"]
    readonly_fields = ["member_count", "created"]
    ordering = ["name"]

    def get_queryset(self, request):
        # One query for the page's counts, however many tenants it shows.
        return super().get_queryset(request).annotate(members=Count("users"))

    @admin.display(description="members", ordering="members")
    def member_count(self, obj):
        return obj.members

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return seconds(obj.created_at)

    # Tenants are registered through the API or ``manage.py create_tenant`` (with their
    # owner and the first records of their trail) and deactivated, not deleted: their audit
    # trail references them.
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        """Through ``tenant_update``: a tier change or deactivation is audited."""
        services.tenant_update(
            tenant=obj, actor=request.user, **{name: getattr(obj, name) for name in form.changed_data}
        )


class StaffUserCreationForm(BaseUserCreationForm):
    """Add user: email, name, tenant, role and a password (checked by the validators)."""

    class Meta:
        model = User
        fields = ("email", "display_name", "tenant", "role")

    def clean_email(self):
        email = User.objects.normalize_email(self.cleaned_data.get("email") or "").lower()
        if User.objects.filter(email=email).exists():
            raise ValidationError("An account with this email already exists.")
        return email


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Users are added and changed through ``user_staff_create``/``user_staff_update``:
    audited on the user's tenant trail. A user's tenant is fixed once created (their rows
    and trail live there)."""

    add_form = StaffUserCreationForm
    ordering = ["email"]
    list_display = ["email", "display_name", "tenant", "role", "is_active", "is_staff", "joined"]
    list_filter = ["role", "is_active", "is_staff", "tenant__tier", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["email", "display_name", "tenant__name"]
    autocomplete_fields = ["tenant"]
    readonly_fields = ["tenant", "last_login", "date_joined"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("display_name", "tenant", "role")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "display_name", "tenant", "role", "password1", "password2")}),
    )

    @admin.display(description="joined", ordering="date_joined")
    def joined(self, obj):
        return seconds(obj.date_joined)

    def get_readonly_fields(self, request, obj=None):
        # On "Add user" the tenant is chosen; afterwards it is fixed.
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            user = services.user_staff_create(
                actor=request.user,
                tenant=form.cleaned_data["tenant"],
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                display_name=form.cleaned_data.get("display_name") or "",
                role=form.cleaned_data["role"],
            )
            # The admin goes on with ``obj`` (log entry, redirect): make it the stored row.
            obj.pk, obj.password, obj.email = user.pk, user.password, user.email
            obj._state.adding = False
            return
        changes = {name: getattr(obj, name) for name in form.changed_data if name in services.USER_STAFF_FIELDS}
        services.user_staff_update(user=obj, actor=request.user, **changes)
