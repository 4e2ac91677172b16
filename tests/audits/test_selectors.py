"""Selectors name their scope: the trail is always read as some user, and the chains of
one tenant and of the whole platform are two selectors, not one with a default."""

import pytest

from accounts.models import User
from audits import selectors
from audits.models import AuditChain
from tests.accounts.factories import UserFactory
from tests.audits.factories import make_records

pytestmark = pytest.mark.django_db


def test_audit_record_list_without_a_user_is_refused_not_widened_to_the_tenant():
    member = UserFactory()
    make_records(member.tenant, 2)

    with pytest.raises(TypeError, match="user"):
        selectors.audit_record_list(tenant=member.tenant, user=None)


def test_audit_record_list_is_the_members_own_and_the_admins_whole_trail():
    member = UserFactory()
    admin = UserFactory(tenant=member.tenant, role=User.Role.ADMIN)
    make_records(member.tenant, 2)
    own = make_records(member.tenant, 1, actor=member)

    members_view = selectors.audit_record_list(tenant=member.tenant, user=member)
    admins_view = selectors.audit_record_list(tenant=member.tenant, user=admin)

    assert [r.pk for r in members_view] == [own[0].pk]
    assert admins_view.count() == 3


def test_one_tenants_chains_and_all_chains_are_separate_selectors():
    first, second = UserFactory(), UserFactory()
    make_records(first.tenant, 1)
    make_records(second.tenant, 1)
    make_records(None, 1)  # the platform chain

    one = selectors.audit_chains(tenant=first.tenant)
    every = selectors.audit_chains_all()

    assert [c.tenant_id for c in one] == [first.tenant_id]
    assert every.count() == AuditChain.objects.count() == 3
    with pytest.raises(TypeError):
        selectors.audit_chains()
