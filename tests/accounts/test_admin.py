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
