from .env import env

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["config.api.auth.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["config.api.renderers.FastJSONRenderer"],
    # Strict JSON (config/api/parsers.py): NUL, lone surrogates, NaN/overflow, deep nesting are 400.
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.StrictJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.api.pagination.CursorPagination",
    # Per-tenant (authenticated) and per-IP (anonymous) limits; see config/api/ratelimit.py.
    "DEFAULT_THROTTLE_CLASSES": ["config.api.ratelimit.TenantRateThrottle"],
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The error envelope (config/api/errors.py), after counting a 401/403 that DRF raised
    # before its throttles ran against the caller's rate-limit budget.
    "EXCEPTION_HANDLER": "config.api.ratelimit.exception_handler",
    # Export endpoints own ?format=; DRF must not read it for content negotiation.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Conversational AI and messaging backend",
    "DESCRIPTION": "Multi-tenant chat, agent runs, messaging hub and audits. Errors use one envelope.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files (pinned with the
    # package), not from a CDN: /api/docs/ works offline and behind a strict CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api(/v[0-9])?",
    # Several models have a "status" or "role"; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "ConversationStatusEnum": "conversations.models.Conversation.Status",
        "ConversationChannelEnum": "conversations.models.Conversation.Channel",
        "MessageStatusEnum": "conversations.models.Message.Status",
        "MessageRoleEnum": "conversations.models.Message.Role",
        "AgentRunStatusEnum": "chat.models.AgentRun.Status",
        "UserRoleEnum": "accounts.models.User.Role",
        "ChannelAccountChannelEnum": "hub.models.ChannelAccount.Channel",
    },
    # The error envelope and each operation's error statuses (config/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.schema.document_errors",
    ],
}

# CORS: permissive in development (DEBUG), explicit origins in production.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOW_ALL_ORIGINS = env.bool("CORS_ALLOW_ALL_ORIGINS", default=env.bool("DJANGO_DEBUG", default=False))
CORS_URLS_REGEX = r"^/(api|health|metrics)/?.*$"
CORS_EXPOSE_HEADERS = [
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "Retry-After",
    "Idempotent-Replayed",
    "Location",
]

# Browsers may send these request headers cross-origin (beyond corsheaders' defaults).
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-csrftoken",
    "x-requested-with",
    "idempotency-key",
    "x-request-id",
    "last-event-id",
)

# --- Rate limits (django-ratelimit on the shared cache: Redis on the real stack, so every
# web process counts against one budget). Fixed one-minute windows per tenant.
# Requests a minute for a tenant on the free tier (new tenants start here).
RATE_LIMIT_FREE = env.int("RATE_LIMIT_FREE", default=60)
# Requests a minute for a tenant on the standard tier.
RATE_LIMIT_STANDARD = env.int("RATE_LIMIT_STANDARD", default=300)
# Requests a minute for a tenant on the enterprise tier.
RATE_LIMIT_ENTERPRISE = env.int("RATE_LIMIT_ENTERPRISE", default=600)
# Anonymous API requests (register, token, refresh) per client IP: brute-force protection.
RATE_LIMIT_AUTH_PER_IP = env.str("RATE_LIMIT_AUTH_PER_IP", default="20/m")
# Off switch for the whole mechanism (django-ratelimit's own setting), e.g. for load tests.
RATELIMIT_ENABLE = env.bool("RATE_LIMIT_ENABLED", default=True)
# Seconds an authenticated caller's row (user + tenant) is cached in each web process
# (config/api/callers.py): a user or tenant deactivated, or a password changed, elsewhere
# than through this process's ORM is refused within this bound. 0 turns the cache off.
AUTH_CALLER_CACHE_SECONDS = env.float("AUTH_CALLER_CACHE_SECONDS", default=2.0)
# When the cache cannot count (Redis down), let requests through (logged) rather than refuse all.
RATELIMIT_FAIL_OPEN = env.bool("RATE_LIMIT_FAIL_OPEN", default=True)
# Where the client IP comes from: empty = REMOTE_ADDR; behind a proxy name the header it
# sets to the single client address, e.g. HTTP_X_REAL_IP.
RATELIMIT_IP_META_KEY = env.str("RATE_LIMIT_IP_META_KEY", default="") or None
RATELIMIT_CACHE_PREFIX = "rl:"

# --- Idempotency keys (Idempotency-Key on creating POSTs), stored in the database.
# Hours a key (and the response it replays) is kept.
IDEMPOTENCY_TTL_HOURS = env.int("IDEMPOTENCY_TTL_HOURS", default=24)
# Seconds a duplicate waits for the first request to finish before answering 409.
IDEMPOTENCY_WAIT_SECONDS = env.float("IDEMPOTENCY_WAIT_SECONDS", default=5.0)
# Seconds after which an unfinished key is presumed abandoned (crashed process) and may be
# taken over by a retry. Keep it above the longest creating request (a sync agent turn).
IDEMPOTENCY_LOCK_SECONDS = env.int("IDEMPOTENCY_LOCK_SECONDS", default=300)
