from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    label = "tenants"
    verbose_name = "Organizations and access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Django's own login flow announces logins through these signals; they are the only
        # place a login (dashboard or admin) can be audited without re-implementing it.
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from .audit_hooks import on_login, on_login_failed

        user_logged_in.connect(on_login, dispatch_uid="tenants.audit.login")
        user_login_failed.connect(on_login_failed, dispatch_uid="tenants.audit.login_failed")
