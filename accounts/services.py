"""Every write in accounts: registration, login, token rotation, logout, user management."""

from dataclasses import dataclass

from django.contrib.auth import authenticate
from django.contrib.auth.models import update_last_login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from audits.services import audit_record
from config.core.errors import ApplicationError, Conflict

from .models import RefreshTokenFamily, RefreshTokenFamilyMember, Tenant, User

# The refresh token claim naming its family (see RefreshTokenFamily).
FAMILY_CLAIM = "family"


class AuthenticationError(ApplicationError):
    status = 401
    code = "invalid_credentials"


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str


def _validate_password(password: str, *, user: User | None = None) -> None:
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise ApplicationError(
            "The password is too weak.", code="validation_error", details={"password": list(exc.messages)}
        ) from exc


# Concurrent registrations of one name race for the same free slug; each loss retries.
_TENANT_SLUG_ATTEMPTS = 10


def _unique_slug(base: str) -> str:
    """The first of ``base``, ``base-2``, ``base-3``... no committed tenant has."""
    slug, n = base, 1
    while Tenant.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def _tenant_create(*, name: str) -> Tenant:
    """A tenant with a unique slug derived from ``name``. The check-then-insert races with
    concurrent registrations of the same name: a losing insert rolls back to its savepoint
    and tries the next free slug (the winner is committed by then, so it is seen), a bounded
    number of times. Precondition: inside a transaction."""
    base = slugify(name)[:60] or "tenant"
    for _attempt in range(_TENANT_SLUG_ATTEMPTS):
        slug = _unique_slug(base)
        try:
            with transaction.atomic():
                return Tenant.objects.create(name=name, slug=slug)
        except IntegrityError:
            continue
    raise Conflict("Too many organisations are being registered with this name; try again.", code="tenant_busy")


def tokens_for(user: User, *, family: RefreshTokenFamily | None = None) -> TokenPair:
    """A new access + refresh pair. The refresh token joins ``family`` (a rotation) or
    starts a new family (a login or registration)."""
    with transaction.atomic():
        if family is None:
            family = RefreshTokenFamily.objects.create(user=user)
        refresh = RefreshToken.for_user(user)  # also stores it as an OutstandingToken
        refresh["tenant_id"] = user.tenant_id
        refresh[FAMILY_CLAIM] = str(family.pk)
        outstanding = OutstandingToken.objects.get(jti=refresh[jwt_settings.JTI_CLAIM])
        RefreshTokenFamilyMember.objects.create(token=outstanding, family=family)
    return TokenPair(access=str(refresh.access_token), refresh=str(refresh))


def _user_create(*, tenant: Tenant, email: str, password: str, display_name: str, role: str) -> User:
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email=email).exists():
        raise Conflict("An account with this email already exists.", code="email_taken", details={"email": email})
    _validate_password(password, user=User(email=email, display_name=display_name))
    try:
        with transaction.atomic():
            return User.objects.create_user(
                email=email, password=password, display_name=display_name, tenant=tenant, role=role
            )
    except IntegrityError as exc:  # a concurrent registration won the race
        raise Conflict("An account with this email already exists.", code="email_taken") from exc


@transaction.atomic
def tenant_register(
    *, email: str, password: str, display_name: str, tenant_name: str, tier: str = Tenant.Tier.FREE
) -> tuple[User, Tenant]:
    """Creates a tenant and its owner; on the free tier unless an operator says otherwise
    (``manage.py create_tenant --tier``; the API always registers on free)."""
    if tier not in Tenant.Tier.values:
        raise ApplicationError("Unknown tier.", code="validation_error", details={"tier": [f"unknown tier {tier}"]})
    if not tenant_name.strip():
        raise ApplicationError("A tenant needs a name.", code="validation_error", details={"tenant_name": ["empty"]})
    tenant = _tenant_create(name=tenant_name.strip())
    if tier != tenant.tier:
        tenant.tier = tier
        tenant.save(update_fields=["tier"])
    user = _user_create(tenant=tenant, email=email, password=password, display_name=display_name, role=User.Role.OWNER)
    audit_record(
        tenant=tenant,
        actor=user,
        action="tenant.created",
        resource_type="tenant",
        resource_id=tenant.pk,
        details={"name": tenant.name, "slug": tenant.slug, "tier": tenant.tier},
    )
    audit_record(
        tenant=tenant,
        actor=user,
        action="user.created",
        resource_type="user",
        resource_id=user.pk,
        details={"email": user.email, "role": user.role},
    )
    return user, tenant


def _login_failed(*, email: str, reason: str | None = None) -> None:
    """Records a failed login on the account's tenant chain, or on the platform chain when
    no account has this email. The reason (``reason``, else worked out from the account)
    stays in the trail, never in the response."""
    known = User.objects.filter(email=email).only("id", "tenant_id", "is_active").first()
    if reason is None:
        reason = ("inactive" if not known.is_active else "bad_password") if known else "unknown_email"
    audit_record(
        tenant=known.tenant_id if known else None,
        action="auth.login_failed",
        resource_type="user" if known else "",
        resource_id=known.pk if known else "",
        details={
            "email": email[:254],
            "reason": reason,
        },
    )


def auth_login_failed(*, email: str, reason: str | None = None) -> None:
    """Records a failed login made through another door than ``auth_login`` (the admin's
    login form), exactly as a failed API login: on the account's tenant chain, or the
    platform chain for an unknown email. ``reason`` defaults to what the account says
    (``bad_password``, ``inactive``, ``unknown_email``); the admin adds ``not_staff``.
    Precondition: as ``auth_login``, not inside a transaction rolled back on the failure."""
    _login_failed(email=(email or "").strip().lower(), reason=reason)


def auth_login_recorded(*, user: User, via: str) -> None:
    """Records a successful login made through another door than ``auth_login`` (``via``:
    ``admin``); Django's own login already updated ``last_login``."""
    audit_record(
        tenant=user.tenant_id,
        actor=user,
        action="auth.login",
        resource_type="user",
        resource_id=user.pk,
        details={"via": via},
    )


def auth_login(*, email: str, password: str, request=None) -> tuple[User, TokenPair]:
    """Precondition: not inside a transaction the caller rolls back on error, or the
    failed-login record (committed before the 401 is raised) would be lost with it."""
    email = (email or "").strip().lower()
    user = authenticate(request, email=email, password=password)
    if user is None:
        _login_failed(email=email)
        raise AuthenticationError("No active account matches these credentials.")
    if not user.tenant.is_active:
        # Right password, deactivated tenant: the same answer as any other failure.
        _login_failed(email=email, reason="tenant_inactive")
        raise AuthenticationError("No active account matches these credentials.")
    with transaction.atomic():
        update_last_login(None, user)
        audit_record(tenant=user.tenant_id, actor=user, action="auth.login", resource_type="user", resource_id=user.pk)
    return user, tokens_for(user)


class _UncheckedRefreshToken(RefreshToken):
    """A refresh token verified (signature, expiry, type) but not yet checked against the
    blacklist: ``auth_refresh`` checks that itself, under the family's lock, because a
    blacklisted token presented again is reuse and has consequences beyond a 401."""

    def check_blacklist(self) -> None:
        return None


def _family_lock(*, token: RefreshToken, user: User) -> RefreshTokenFamily | None:
    """The token's family, locked until the transaction ends (``TokenError`` if the claim
    names no family of this user). None for tokens issued before families existed.
    Precondition: inside a transaction."""
    family_id = token.get(FAMILY_CLAIM)
    if family_id is None:
        return None
    try:
        return RefreshTokenFamily.objects.select_for_update().get(pk=family_id, user=user)
    except (RefreshTokenFamily.DoesNotExist, DjangoValidationError, ValueError) as exc:
        raise TokenError("Token family is unknown") from exc


def _refresh_token_spend(token: RefreshToken) -> bool:
    """Blacklists ``token``; False when it already was (it has been spent before). Locks
    its outstanding row first, so of concurrent refreshes of one token exactly one spends
    it: the others wait for the lock, then see the blacklist entry. simplejwt's own
    ``blacklist()`` checks and then ``get_or_create``s, which lets both through.
    Precondition: inside a transaction (the lock is held until it ends)."""
    token.outstand()
    outstanding = OutstandingToken.objects.select_for_update().get(jti=token[jwt_settings.JTI_CLAIM])
    if BlacklistedToken.objects.filter(token=outstanding).exists():
        return False
    # A concurrent logout of a token without family (which takes no lock) may insert
    # first: IntegrityError for the caller.
    BlacklistedToken.objects.create(token=outstanding)
    return True


def _family_revoke(*, family: RefreshTokenFamily, reason: str) -> int:
    """Blacklists every refresh token of ``family`` not blacklisted yet and marks the family
    revoked (the first reason stays). Returns how many tokens it blacklisted. Access tokens
    are not touched: they are never checked against the blacklist and live minutes.
    Precondition: ``family`` locked (``_family_lock``), so no rotation adds a member meanwhile."""
    live = list(
        OutstandingToken.objects.filter(family_membership__family=family, blacklistedtoken__isnull=True).values_list(
            "pk", flat=True
        )
    )
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token_id=pk) for pk in live], ignore_conflicts=True)
    if family.revoked_at is None:
        family.revoked_at = timezone.now()
        family.revoked_reason = reason
        family.save(update_fields=["revoked_at", "revoked_reason"])
    return len(live)


def _refresh_refused() -> AuthenticationError:
    return AuthenticationError("The refresh token is invalid, expired or revoked.", code="token_not_valid")


def auth_refresh(*, refresh: str) -> TokenPair:
    """Rotates the refresh token: the old one is blacklisted, the new one joins its family.

    A token presented again after it was rotated is reuse (OAuth 2.0 Security BCP): the
    refresh is refused and the whole family is revoked, so whichever of the thief and the
    user holds the newer token has to log in again; ``auth.refresh_reused`` is recorded.
    This includes the losers of concurrent refreshes of one token: exactly one rotates,
    and the second presentation revokes the family (no grace period; clients refresh
    one at a time, see docs/decisions.md)."""
    reused = False
    try:
        with transaction.atomic():
            old = _UncheckedRefreshToken(refresh)
            user = User.objects.get(pk=old["user_id"], is_active=True, tenant__is_active=True)
            family = _family_lock(token=old, user=user)
            if _refresh_token_spend(old):
                if family is not None and family.revoked_at is not None:
                    raise TokenError("Token family is revoked")  # its members are blacklisted: defence only
                audit_record(
                    tenant=user.tenant_id,
                    actor=user,
                    action="auth.token_refreshed",
                    resource_type="user",
                    resource_id=user.pk,
                    details={"jti": old.get("jti", ""), "family": str(family.pk) if family else ""},
                )
                pair = tokens_for(user, family=family)
            elif family is None or family.revoked_reason == RefreshTokenFamily.RevokedReason.LOGOUT:
                # A logged-out client that retries its refresh is refused, and is no thief.
                raise TokenError("Token is blacklisted")
            else:
                # Committed before the 401: the revocation must outlive the refused request.
                revoked = _family_revoke(family=family, reason=RefreshTokenFamily.RevokedReason.REUSED)
                audit_record(
                    tenant=user.tenant_id,
                    actor=user,
                    action="auth.refresh_reused",
                    resource_type="user",
                    resource_id=user.pk,
                    details={"jti": old.get("jti", ""), "family": str(family.pk), "revoked_tokens": revoked},
                )
                reused = True
    except (TokenError, User.DoesNotExist, KeyError, IntegrityError) as exc:
        raise _refresh_refused() from exc
    if reused:
        raise _refresh_refused()
    return pair


def auth_logout(*, user: User, refresh: str) -> None:
    """Blacklists the refresh token and revokes its family: no token of this login can be
    refreshed any more (access tokens already issued run out within minutes)."""
    try:
        token = RefreshToken(refresh)
    except TokenError as exc:
        raise _refresh_refused() from exc
    if str(token.get("user_id")) != str(user.pk):
        raise ApplicationError("This refresh token belongs to another account.", code="token_mismatch")
    try:
        with transaction.atomic():
            family = _family_lock(token=token, user=user)
            token.blacklist()
            revoked = _family_revoke(family=family, reason=RefreshTokenFamily.RevokedReason.LOGOUT) if family else 0
            audit_record(
                tenant=user.tenant_id,
                actor=user,
                action="auth.logout",
                resource_type="user",
                resource_id=user.pk,
                details={
                    "jti": token.get("jti", ""),
                    "family": str(family.pk) if family else "",
                    "revoked_tokens": revoked,
                },
            )
    except TokenError as exc:
        raise _refresh_refused() from exc


def refresh_token_families_purge(*, older_than=None) -> int:
    """Deletes families left without tokens (``flushexpiredtokens`` removed their expired
    members) once they are older than the refresh lifetime. Returns how many."""
    cutoff = timezone.now() - (older_than or jwt_settings.REFRESH_TOKEN_LIFETIME)
    deleted, _ = RefreshTokenFamily.objects.filter(created_at__lt=cutoff, members__isnull=True).delete()
    return deleted


@transaction.atomic
def user_add(*, actor: User, email: str, password: str, display_name: str, role: str) -> User:
    """A tenant owner or admin adds a user to their own tenant. Only owners make owners."""
    if not actor.is_tenant_admin:
        raise ApplicationError("Only owners and admins manage users.", code="permission_denied", status=403)
    if role == User.Role.OWNER and actor.role != User.Role.OWNER:
        raise ApplicationError("Only an owner can add another owner.", code="permission_denied", status=403)
    user = _user_create(tenant=actor.tenant, email=email, password=password, display_name=display_name, role=role)
    audit_record(
        tenant=actor.tenant_id,
        actor=actor,
        action="user.created",
        resource_type="user",
        resource_id=user.pk,
        details={"email": user.email, "role": user.role},
    )
    return user


TENANT_STAFF_FIELDS = ("name", "slug", "tier", "is_active")


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor: User, **changes) -> Tenant:
    """Platform staff change a tenant (name, slug, tier, active): recorded as
    ``tenant.updated`` on the tenant's own trail with each changed field's old and new
    value. A tier change takes effect on the tenant's next rate-limit check. Deactivating
    is how a tenant is removed (its trail references it). Only named fields are written."""
    stored = Tenant.objects.select_for_update().get(pk=tenant.pk)
    diff = {
        name: {"from": getattr(stored, name), "to": value}
        for name, value in changes.items()
        if name in TENANT_STAFF_FIELDS and getattr(stored, name) != value
    }
    for name, change in diff.items():
        setattr(stored, name, change["to"])
        setattr(tenant, name, change["to"])
    if diff:
        stored.save(update_fields=sorted(diff))
        audit_record(
            tenant=stored.pk,
            actor=actor,
            action="tenant.updated",
            resource_type="tenant",
            resource_id=stored.pk,
            details={"changes": diff},
        )
    return tenant


USER_STAFF_FIELDS = ("email", "display_name", "role", "is_active", "is_staff", "is_superuser")


@transaction.atomic
def user_staff_create(
    *, actor: User, tenant: Tenant, email: str, password: str, display_name: str, role: str = User.Role.MEMBER
) -> User:
    """Platform staff add a user to ``tenant`` (the admin's "Add user"): the same checks
    as registration (unique email, password strength), recorded as ``user.created`` on
    that tenant's trail with the staff member as actor."""
    if role not in User.Role.values:
        raise ApplicationError("Unknown role.", code="validation_error", details={"role": [f"unknown role {role}"]})
    user = _user_create(tenant=tenant, email=email, password=password, display_name=display_name, role=role)
    audit_record(
        tenant=tenant.pk,
        actor=actor,
        action="user.created",
        resource_type="user",
        resource_id=user.pk,
        details={"email": user.email, "role": user.role, "via": "admin"},
    )
    return user


@transaction.atomic
def user_staff_update(*, user: User, actor: User, **changes) -> User:
    """Platform staff change a user (email, name, role, active, staff flags): recorded as
    ``user.updated`` on the user's tenant trail with each changed field's old and new
    value. A user's tenant is never changed (their rows and trail stay in it). Only named
    fields are written; nothing is recorded when nothing changed."""
    stored = User.objects.select_for_update().get(pk=user.pk)
    if "email" in changes:
        changes["email"] = User.objects.normalize_email(changes["email"]).lower()
    diff = {
        name: {"from": getattr(stored, name), "to": value}
        for name, value in changes.items()
        if name in USER_STAFF_FIELDS and getattr(stored, name) != value
    }
    if "email" in diff and User.objects.filter(email=diff["email"]["to"]).exclude(pk=user.pk).exists():
        raise Conflict("An account with this email already exists.", code="email_taken")
    for name, change in diff.items():
        setattr(stored, name, change["to"])
        setattr(user, name, change["to"])
    if diff:
        stored.save(update_fields=sorted(diff))
        audit_record(
            tenant=stored.tenant_id,
            actor=actor,
            action="user.updated",
            resource_type="user",
            resource_id=stored.pk,
            details={"changes": diff},
        )
    return user
