"""Staff accounts from the command line, as the README says: email and password only."""

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_createsuperuser_noinput_with_only_email_and_password_and_the_user_can_log_into_admin(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_DISPLAY_NAME", raising=False)
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "Root.Admin@Example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "difference-engine-1822")

    call_command("createsuperuser", interactive=False, verbosity=0)

    user = User.objects.get(email="root.admin@example.com")
    assert user.is_superuser and user.is_staff
    assert user.display_name == "Root.Admin"  # the email's local part, as typed
    assert user.tenant.slug == "operators"
    admin = Client()
    login = admin.post(
        "/admin/login/?next=/admin/", {"username": "root.admin@example.com", "password": "difference-engine-1822"}
    )
    assert login.status_code == 302 and login["Location"] == "/admin/"
    index = admin.get("/admin/")
    assert index.status_code == 200
    assert b"Site administration" in index.content


def test_createsuperuser_keeps_a_display_name_given_explicitly():
    user = User.objects.create_superuser("grace@example.com", "cobol-compiler-1959", display_name="Grace")

    assert user.display_name == "Grace"
