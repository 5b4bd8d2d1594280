"""Row-level security policies, created by migrations.

`EnableTenantRLS("core_job")` turns RLS on (and FORCE, so even the owner is bound) and creates the
policy `tenant_isolation`: a row is visible and writable only when its tenant_id equals the
transaction's `lode.tenant_id`. Tables whose rows must be found before a tenant is known (API
keys by prefix, invitations by token, a user's own memberships) add one more clause."""
from django.db import migrations

TENANT_EXPR = "NULLIF(current_setting('lode.tenant_id', true), '')::uuid"
USER_EXPR = "NULLIF(current_setting('lode.user_id', true), '')::uuid"


def tenant_rls_sql(table: str, *, column: str = "tenant_id", extra_using: str | None = None, check: str | None = None) -> tuple[str, str]:
    using = f"{column} = {TENANT_EXPR}"
    if extra_using:
        using = f"({using}) OR ({extra_using})"
    with_check = check or f"{column} = {TENANT_EXPR}"
    forward = f"""
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        DROP POLICY IF EXISTS tenant_isolation ON {table};
        CREATE POLICY tenant_isolation ON {table} USING ({using}) WITH CHECK ({with_check});
    """
    backward = f"""
        DROP POLICY IF EXISTS tenant_isolation ON {table};
        ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
    """
    return forward, backward


class EnableTenantRLS(migrations.RunSQL):
    def __init__(self, table: str, *, column: str = "tenant_id", extra_using: str | None = None, check: str | None = None):
        forward, backward = tenant_rls_sql(table, column=column, extra_using=extra_using, check=check)
        super().__init__(forward, backward)
