from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from freezegun import freeze_time
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.services import tokens_for
from accounts.tasks import flush_expired_tokens
from audits.models import AuditRecord
from audits.services import audit_record
from audits.tasks import purge_old_audits

pytestmark = pytest.mark.django_db


def test_every_scheduled_task_exists():
    from config.celery import app

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry["task"]


def test_flush_expired_tokens_drops_only_expired_ones(user):
    with freeze_time(timezone.now() - timedelta(days=30)):
        tokens_for(user)
    tokens_for(user)

    flush_expired_tokens.apply()

    assert OutstandingToken.objects.count() == 1


def test_audit_retention_is_off_by_default_and_purges_when_set(user, settings):
    with freeze_time(timezone.now() - timedelta(days=40)):
        audit_record(tenant=user.tenant, actor=user, action="custom.old")
    audit_record(tenant=user.tenant, actor=user, action="custom.new")

    kept_all = purge_old_audits.apply().get()
    settings.AUDIT_RETENTION_DAYS = 30
    purged = purge_old_audits.apply().get()

    assert kept_all == 0
    assert purged == 1
    assert not AuditRecord.objects.filter(action="custom.old").exists()
    assert AuditRecord.objects.filter(action="custom.new").exists()
