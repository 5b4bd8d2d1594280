"""Database roles: the "owner" alias exists only to run migrations as the schema owner; the
platform itself reads and writes as the application role, which is granted rights on the tables
after every migration but does not own them (so PostgreSQL row-level security applies to it)."""
from django.conf import settings
from django.db import connections


class OwnerMigratesRouter:
    """Reads and writes go to "default". Migrations are allowed on both aliases because they name
    the same database: `migrate --database owner` works, and a plain `migrate` as the application
    role fails on permissions instead of half-applying."""

    def db_for_read(self, model, **hints):
        return "default"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return True


def grant_application_role(*, using: str) -> None:
    """Gives the application and system roles data rights (never DDL, never ownership) on every
    table. Append-only tables take UPDATE and DELETE back in their own migrations' triggers."""
    connection = connections[using]
    for alias in ("default", "system"):
        role = settings.DATABASES.get(alias, {}).get("USER")
        if not role or role == connection.settings_dict["USER"]:
            continue
        quoted = connection.ops.quote_name(role)
        with connection.cursor() as cursor:
            cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
            cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")


def on_post_migrate(sender, using: str = "default", **kwargs) -> None:
    # post_migrate fires once per app; granting is cheap and idempotent, but once per run is enough.
    if sender.label == "core":
        grant_application_role(using=using)
