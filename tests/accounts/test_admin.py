"""Tenant changes through the admin are audited on the tenant's own chain."""

import pytest

from accounts.models import Tenant
from audits.models import AuditRecord
from tests.accounts.factories import TenantFactory
from tests.conftest import ADMIN_IP, ADMIN_REQUEST_ID

pytestmark = pytest.mark.django_db


def test_tenant_tier_change_in_the_admin_is_audited(admin_client, staff):
    tenant = TenantFactory(name="Acme", slug="acme", tier=Tenant.Tier.FREE)

    response = admin_client.post(
        f"/admin/accounts/tenant/{tenant.pk}/change/",
        {"name": "Acme", "slug": "acme", "tier": "enterprise", "is_active": "on"},
    )

    assert response.status_code == 302, response.content
    tenant.refresh_from_db()
    assert tenant.tier == "enterprise"
    record = AuditRecord.objects.get(action="tenant.updated")
    assert (record.tenant_id, record.actor_id, record.resource_id) == (tenant.pk, staff.pk, str(tenant.pk))
    assert record.details == {"changes": {"tier": {"from": "free", "to": "enterprise"}}}
    assert (record.request_id, record.ip) == (ADMIN_REQUEST_ID, ADMIN_IP)


def test_tenant_deactivation_in_the_admin_is_audited(admin_client):
    tenant = TenantFactory(name="Acme", slug="acme")

    response = admin_client.post(
        f"/admin/accounts/tenant/{tenant.pk}/change/", {"name": "Acme", "slug": "acme", "tier": "free"}
    )

    assert response.status_code == 302, response.content
    record = AuditRecord.objects.get(action="tenant.updated")
    assert record.details == {"changes": {"is_active": {"from": True, "to": False}}}


def test_tenants_are_not_added_or_deleted_in_the_admin(admin_client):
    tenant = TenantFactory()
    tenants_before = Tenant.objects.count()

    assert admin_client.get("/admin/accounts/tenant/add/").status_code == 403
    assert admin_client.post(f"/admin/accounts/tenant/{tenant.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert Tenant.objects.count() == tenants_before


def test_tenant_list_shows_member_counts_in_one_query(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.accounts.factories import UserFactory

    tenant = TenantFactory(name="Acme")
    for _ in range(3):
        UserFactory(tenant=tenant)

    with CaptureQueriesContext(connection) as few:
        response = admin_client.get("/admin/accounts/tenant/")
    for _ in range(5):
        UserFactory()
    with CaptureQueriesContext(connection) as many:
        admin_client.get("/admin/accounts/tenant/")

    row = next(r for r in response.context["cl"].result_list if r.pk == tenant.pk)
    assert row.members == 3
    assert len(many) == len(few)


def test_adding_a_user_in_the_admin_goes_through_the_service_and_is_audited(admin_client, staff):
    from accounts.models import User

    tenant = TenantFactory(slug="acme")

    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "New.Person@Example.com",
            "display_name": "New",
            "tenant": str(tenant.pk),
            "role": "admin",
            "password1": "a-long-enough-passphrase-7",
            "password2": "a-long-enough-passphrase-7",
        },
    )

    assert response.status_code == 302, response.content
    user = User.objects.get(email="new.person@example.com")
    assert (user.tenant_id, user.role) == (tenant.pk, "admin") and user.check_password("a-long-enough-passphrase-7")
    record = AuditRecord.objects.get(action="user.created")
    assert (record.tenant_id, record.actor_id, record.resource_id) == (tenant.pk, staff.pk, str(user.pk))


def test_a_weak_password_or_taken_email_is_a_form_error_not_a_500(admin_client):
    from accounts.models import User
    from tests.accounts.factories import UserFactory

    UserFactory(email="taken@example.com")
    tenant = TenantFactory()
    form = {"display_name": "X", "tenant": str(tenant.pk), "role": "member"}

    weak = admin_client.post(
        "/admin/accounts/user/add/", {**form, "email": "a@example.com", "password1": "123", "password2": "123"}
    )
    taken = admin_client.post(
        "/admin/accounts/user/add/",
        {**form, "email": "Taken@example.com", "password1": "long-pass-phrase-8", "password2": "long-pass-phrase-8"},
    )

    assert weak.status_code == 200 and taken.status_code == 200
    assert b"already exists" in taken.content
    assert not User.objects.filter(email="a@example.com").exists()
    assert not AuditRecord.objects.filter(action="user.created").exists()


def test_changing_a_user_in_the_admin_is_audited_and_the_tenant_stays(admin_client, staff):
    from tests.accounts.factories import UserFactory

    user = UserFactory(email="m@example.com", display_name="M", role="member")
    other_tenant = TenantFactory()

    response = admin_client.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {
            "email": "m@example.com",
            "display_name": "M",
            "role": "admin",
            "tenant": str(other_tenant.pk),  # read-only: ignored
            "is_active": "on",
        },
    )

    assert response.status_code == 302, response.content
    user.refresh_from_db()
    assert user.role == "admin" and user.tenant_id != other_tenant.pk
    record = AuditRecord.objects.get(action="user.updated")
    assert (record.tenant_id, record.actor_id) == (user.tenant_id, staff.pk)
    assert record.details == {"changes": {"role": {"from": "member", "to": "admin"}}}


def test_staff_services_refuse_a_bad_tier_and_a_taken_email():
    import pytest

    from accounts import services
    from config.core.errors import ApplicationError, Conflict
    from tests.accounts.factories import UserFactory

    taken, user = UserFactory(email="taken@example.com"), UserFactory(email="me@example.com")

    with pytest.raises(ApplicationError, match="Unknown tier"):
        services.tenant_register(
            email="x@example.com", password="long-pass-phrase-9", display_name="X", tenant_name="X", tier="gold"
        )
    with pytest.raises(Conflict):
        services.user_staff_update(user=user, actor=taken, email="TAKEN@example.com")

    user.refresh_from_db()
    assert user.email == "me@example.com"
    assert not AuditRecord.objects.filter(action__in=["tenant.created", "user.updated"]).exists()
