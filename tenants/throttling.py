"""Rate limits per API key and per organization, counted in the shared Redis cache. They keep
one client from starving the others; they are not a security boundary (permissions are)."""
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request, view):
        access = getattr(request, "tenant_access", None)
        if access is None or access.api_key is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": access.api_key.pk}


class OrganizationRateThrottle(SimpleRateThrottle):
    scope = "organization"

    def get_cache_key(self, request, view):
        access = getattr(request, "tenant_access", None)
        if access is None or access.tenant is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": access.tenant.pk}


class SignupRateThrottle(AnonRateThrottle):
    """Sign-ups per client address, shared by the API and the dashboard's form (one counter)."""

    scope = "signup"
