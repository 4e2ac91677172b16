from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and tenants"

    def ready(self):
        # Django's deploy checks for the inline middleware (the ground floor has no app).
        from config.api import checks  # noqa: F401
