from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.fast import fast_view
from config.api.idempotency import idempotent
from config.api.views import HasTenant, TenantScopedViewSet

from . import selectors, services
from .permissions import IsTenantAdmin
from .serializers import (
    LoginSerializer,
    MeSerializer,
    RefreshSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    TenantSerializer,
    TokenPairSerializer,
    UserCreateSerializer,
    UserSerializer,
    me_body,
)


class RegisterView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes = []

    @extend_schema(request=RegisterSerializer, responses={201: RegisteredSerializer}, operation_id="auth_register")
    def post(self, request):
        data = RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, tenant = services.tenant_register(**data.validated_data)
        tokens = services.tokens_for(user)
        body = {"user": UserSerializer(user).data, "tenant": TenantSerializer(tenant).data, **asdict(tokens)}
        return Response(body, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes = []

    @extend_schema(request=LoginSerializer, responses={200: TokenPairSerializer}, operation_id="auth_token")
    def post(self, request):
        data = LoginSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        _, tokens = services.auth_login(**data.validated_data, request=request)
        return Response(asdict(tokens))


class TokenRefreshView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes = []

    @extend_schema(request=RefreshSerializer, responses={200: TokenPairSerializer}, operation_id="auth_token_refresh")
    def post(self, request):
        data = RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(asdict(services.auth_refresh(refresh=data.validated_data["refresh"])))


class LogoutView(APIView):
    @extend_schema(request=RefreshSerializer, responses={204: None}, operation_id="auth_logout")
    def post(self, request):
        data = RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.auth_logout(user=request.user, refresh=data.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @classmethod
    def as_view(cls, **initkwargs):
        # Served async (config/api/fast.py): the caller from the token and the caller cache,
        # the rate limit in the event loop; no thread hop on a cache hit.
        return fast_view(super().as_view(**initkwargs), get=cls.fast_get)

    @staticmethod
    async def fast_get(request, user):
        return me_body(user)

    @extend_schema(responses={200: MeSerializer}, operation_id="auth_me")
    def get(self, request):
        return Response(me_body(request.user))


class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Users of the caller's tenant; owners and admins list and add them."""

    serializer_class = UserSerializer
    permission_classes = [permissions.IsAuthenticated, HasTenant, IsTenantAdmin]
    cursor_ordering = ("-date_joined", "-id")

    def select(self, *, tenant, user):
        return selectors.user_list(tenant=tenant)

    @extend_schema(request=UserCreateSerializer, responses={201: UserSerializer})
    @idempotent
    def create(self, request):
        data = UserCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_add(actor=request.user, **data.validated_data)
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED)
