"""Channel accounts: connect (the secret is made here and returned once), change the
name and settings, disconnect. Tenant owners and admins only; every change audited,
never with the secret."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.services import audit_record
from config.core.errors import ApplicationError, Conflict, Forbidden

from ..connectors import connector_for
from ..models import ChannelAccount
from ..secrets import secret_encrypt, secret_new
from .inbound import webhook_keys


def _check_admin(user) -> None:
    if not user.is_tenant_admin:
        raise Forbidden("Only the tenant's owners and admins may manage channel accounts.")


def channel_account_create(
    *, user, channel: str, name: str, external_id: str, settings: dict | None = None
) -> tuple[ChannelAccount, str]:
    """(account, secret): the secret is returned this once and stored encrypted. 409 when a
    connected account of this channel already has ``external_id`` (inbound payloads name
    the account by it)."""
    _check_admin(user)
    clean = connector_for(channel).settings_validate(settings or {})
    secret = secret_new()
    try:
        with transaction.atomic():
            account = ChannelAccount.objects.create(
                tenant_id=user.tenant_id,
                channel=channel,
                name=name,
                external_id=external_id,
                settings=clean,
                secret_encrypted=secret_encrypt(secret),
                created_by=user,
            )
            audit_record(
                tenant=user.tenant,
                actor=user,
                action="channel_account.created",
                resource_type="channel_account",
                resource_id=account.pk,
                details={"channel": channel, "name": name, "external_id": external_id},
            )
    except IntegrityError:
        raise Conflict(
            "A connected account of this channel already has this external_id.",
            code="channel_account_exists",
            details={"external_id": ["taken"]},
        ) from None
    return account, secret


@transaction.atomic
def channel_account_update(*, account: ChannelAccount, user, name: str | None = None, settings=None) -> ChannelAccount:
    _check_admin(user)
    fields = []
    if name is not None:
        account.name, fields = name, [*fields, "name"]
    if settings is not None:
        account.settings = connector_for(account.channel).settings_validate(settings)
        fields.append("settings")
    account.updated_at = timezone.now()
    account.save(update_fields=[*fields, "updated_at"])
    audit_record(
        tenant=user.tenant,
        actor=user,
        action="channel_account.updated",
        resource_type="channel_account",
        resource_id=account.pk,
        details={"fields": sorted(fields)},
    )
    return account


@transaction.atomic
def channel_account_disconnect(*, account: ChannelAccount, user) -> None:
    """Disconnects the account: inbound payloads naming it are 404, queued deliveries fail
    (``account disconnected``); its conversations and history stay."""
    _check_admin(user)
    ChannelAccount.objects.filter(pk=account.pk).update(is_active=False, updated_at=timezone.now())
    # Its status webhooks stop being verified from this process's cache (others: within
    # HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS). At once, not after commit: forgetting an entry
    # whose disconnect then rolls back costs one read.
    webhook_keys.forget(account.channel, account.external_id)
    audit_record(
        tenant=user.tenant,
        actor=user,
        action="channel_account.disconnected",
        resource_type="channel_account",
        resource_id=account.pk,
        details={"channel": account.channel},
    )


def check_channel(channel) -> str:
    from ..connectors import channels

    if channel not in channels():
        raise ApplicationError("Unknown channel.", code="validation_error", details={"channel": ["unknown"]})
    return channel
