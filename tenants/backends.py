"""Email login with brute-force protection: after too many failures for one email (from any
address) or from one address (for any email) within the window, logins are refused for a while,
even with the right password."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied


def _keys(email: str, ip: str | None) -> list[str]:
    keys = [f"login-fail:email:{email.strip().lower()}"]
    if ip:
        keys.append(f"login-fail:ip:{ip}")
    return keys


def login_is_locked(*, email: str, ip: str | None) -> bool:
    limits = {"email": settings.LOGIN_MAX_FAILURES_PER_EMAIL, "ip": settings.LOGIN_MAX_FAILURES_PER_IP}
    for key in _keys(email, ip):
        if (cache.get(key) or 0) >= limits[key.split(":")[1]]:
            return True
    return False


def login_failure_count(*, email: str, ip: str | None) -> None:
    for key in _keys(email, ip):
        cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)


class EmailBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        email = username or kwargs.get("email") or ""
        ip = request.META.get("REMOTE_ADDR") if request is not None else None
        if login_is_locked(email=email, ip=ip):
            # PermissionDenied stops Django trying other backends and fires user_login_failed.
            raise PermissionDenied("Too many failed sign-ins; try again later.")
        user = super().authenticate(request, username=email, password=password, **kwargs)
        if user is None:
            login_failure_count(email=email, ip=ip)
        return user
