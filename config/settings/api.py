from .env import env

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.api.pagination.CursorPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.errors.exception_handler",
    # Export endpoints own ?format=; DRF must not read it for content negotiation.
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Conversational AI and messaging backend",
    "DESCRIPTION": "Multi-tenant chat, agent runs, messaging hub and audits. Errors use one envelope.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
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
    },
}

# CORS: permissive in development (DEBUG), explicit origins in production.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOW_ALL_ORIGINS = env.bool("CORS_ALLOW_ALL_ORIGINS", default=env.bool("DJANGO_DEBUG", default=False))
CORS_URLS_REGEX = r"^/(api|health|metrics)/?.*$"
CORS_EXPOSE_HEADERS = ["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "Retry-After"]
