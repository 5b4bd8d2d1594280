"""PostgreSQL row-level security, tested as the application role with raw SQL: it holds even
where application code forgets to scope."""
import pytest
from django.conf import settings
from django.db import connection, connections, transaction

from lode.core.jobs.services import job_create
from tenants.db_context import db_tenant_set, tenant_atomic

pytestmark = pytest.mark.django_db

# Tables that carry tenant rows under another column name.
TENANT_COLUMNS = ("tenant_id", "organization_id")


def _tenant_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT c.table_name FROM information_schema.columns c
            JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_schema = c.table_schema
            WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.column_name = ANY(%s)
            ORDER BY 1
            """,
            [list(TENANT_COLUMNS)],
        )
        return [row[0] for row in cursor.fetchall()]


def test_every_tenant_owned_table_has_forced_row_level_security_and_a_policy():
    tables = _tenant_tables()
    assert {"core_job", "core_jobevent", "core_artifact", "tenants_membership", "tenants_apikey"} <= set(tables)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname AND p.schemaname = 'public')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relname = ANY(%s)
            """,
            [tables],
        )
        state = {name: (enabled, forced, policies) for name, enabled, forced, policies in cursor.fetchall()}
    unprotected = sorted(name for name in tables if state[name] != (True, True, state[name][2]) or state[name][2] < 1)
    assert unprotected == [], f"tenant-owned tables without forced RLS and a policy: {unprotected}"


def test_the_application_role_neither_owns_the_tables_nor_bypasses_rls():
    app_role = settings.DATABASES["default"]["USER"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [app_role])
        assert cursor.fetchone() == (False, False)
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = %s", [app_role])
        assert cursor.fetchone()[0] == 0


def test_raw_query_sees_no_rows_without_a_tenant_context_and_only_the_tenants_with_one(make_tenant):
    a, b = make_tenant(), make_tenant()
    job_a = job_create(tenant_id=a.organization.id, created_by=a.user, kind="core.ping")
    job_b = job_create(tenant_id=b.organization.id, created_by=b.user, kind="core.ping")

    with transaction.atomic(), connection.cursor() as cursor:
        db_tenant_set(tenant_id=None)
        cursor.execute("SELECT id FROM core_job")  # no WHERE: the code "forgot" to scope
        assert cursor.fetchall() == []
        cursor.execute("SELECT count(*) FROM core_jobevent")
        assert cursor.fetchone()[0] == 0

    with tenant_atomic(a.organization.id), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM core_job")
        assert [row[0] for row in cursor.fetchall()] == [job_a.id]
        # Updates and deletes of the other tenant's rows touch nothing.
        cursor.execute("UPDATE core_job SET progress_message = 'hijacked' WHERE id = %s", [job_b.id])
        assert cursor.rowcount == 0
        cursor.execute("DELETE FROM core_job WHERE id = %s", [job_b.id])
        assert cursor.rowcount == 0


def test_a_tenant_cannot_write_a_row_into_another_tenant(make_tenant):
    a, b = make_tenant(), make_tenant()
    job_b = job_create(tenant_id=b.organization.id, created_by=b.user, kind="core.ping")

    with pytest.raises(Exception, match="row-level security"):
        with tenant_atomic(a.organization.id), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO core_jobevent (tenant_id, job_id, kind, message, data, created_at) "
                "VALUES (%s, %s, 'log', 'planted', '{}', now())",
                [b.organization.id, job_b.id],
            )


@pytest.mark.django_db(transaction=True, databases=["default", "owner"])
def test_the_owner_role_is_bound_by_rls_too(make_tenant):
    a = make_tenant()
    job_create(tenant_id=a.organization.id, created_by=a.user, kind="core.ping")

    # A separate connection as the table owner (FORCE ROW LEVEL SECURITY): sees nothing.
    with connections["owner"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM core_job")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_the_tenant_context_cannot_be_set_outside_a_transaction():
    with pytest.raises(RuntimeError, match="inside a transaction"):
        db_tenant_set(tenant_id=None)


def test_a_nested_tenant_block_restores_the_callers_context(make_tenant):
    a, b = make_tenant(), make_tenant()
    with tenant_atomic(a.organization.id), connection.cursor() as cursor:
        with tenant_atomic(b.organization.id):
            pass
        cursor.execute("SELECT current_setting('lode.tenant_id')")
        assert cursor.fetchone()[0] == str(a.organization.id)


@pytest.mark.django_db(transaction=True, databases=["default", "system"])
def test_the_default_manager_is_scoped_to_the_current_tenant_even_where_rls_is_bypassed(make_tenant):
    from lode.core.models import Job
    from tenants.db_context import dangerously_all_tenants

    a, b = make_tenant(), make_tenant()
    job_a = job_create(tenant_id=a.organization.id, created_by=a.user, kind="core.ping")
    job_create(tenant_id=b.organization.id, created_by=b.user, kind="core.ping")

    assert list(Job.objects.all()) == []  # no tenant context: nothing
    assert Job.objects.using("system").count() == 0  # the ORM scope holds on the bypassing role too
    assert dangerously_all_tenants(Job).count() == 2  # spanning tenants has to be said out loud
    with tenant_atomic(a.organization.id):
        assert [job.id for job in Job.objects.all()] == [job_a.id]


def test_an_api_key_context_does_not_reach_its_creators_other_memberships(make_tenant):
    from types import SimpleNamespace

    from tenants.context import access_for_api_key
    from tenants.models import ApiKey
    from tenants.services import invitation_accept, invitation_create
    from tests.conftest import api_key_for, rows

    a, b = make_tenant(), make_tenant()
    invite = invitation_create(tenant_id=b.organization.id, invited_by=b.user, email=a.user.email, role="engineer")
    invitation_accept(token=invite.token, user=a.user)  # a's owner is also a member of b
    api_key_for(a.user)
    [key] = rows(ApiKey, a.organization.id)

    with transaction.atomic(), connection.cursor() as cursor:
        access_for_api_key(SimpleNamespace(), key)
        cursor.execute("SELECT organization_id FROM tenants_membership")
        seen = {row[0] for row in cursor.fetchall()}

    assert seen == {a.organization.id}
