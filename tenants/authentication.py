"""DRF authentication: API keys (`Authorization: Bearer lode_sk_…`) and the dashboard's session.
Both end by setting the request's tenant access and the row-level-security context."""
from __future__ import annotations

from rest_framework import authentication, exceptions

from .context import access_for_api_key, access_for_user
from .services import api_key_authenticate, api_key_touch


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise exceptions.AuthenticationFailed("The bearer token is empty.")
        api_key = api_key_authenticate(raw_key=token, ip=client_ip(request))
        access_for_api_key(request, api_key)
        api_key_touch(api_key=api_key, ip=client_ip(request))
        # DRF wants a user object; the key acts for its organization, not as a person.
        return (ApiKeyUser(api_key), api_key)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="lode"'


class ApiKeyUser:
    """Stands in for request.user when an API key authenticated the request."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, api_key):
        self.api_key = api_key
        self.pk = None
        self.id = None
        self.email = f"api-key:{api_key.prefix}"

    def __str__(self) -> str:
        return self.email


class SessionAuthentication(authentication.SessionAuthentication):
    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            access_for_user(request, result[0])
        return result
