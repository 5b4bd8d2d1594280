"""Row-level security on every datasets table, and versions that cannot change once ready."""
from django.db import migrations

from tenants.rls import EnableTenantRLS


class Migration(migrations.Migration):

    dependencies = [
        ("datasets", "0001_initial"),
    ]

    operations = [
        EnableTenantRLS("datasets_dataset"),
        EnableTenantRLS("datasets_upload"),
        EnableTenantRLS("datasets_datasetversion"),
        migrations.RunSQL(
            """
            CREATE OR REPLACE FUNCTION datasets_version_immutable() RETURNS trigger AS $$
            BEGIN
              -- What a version is may not change once ready; who made it may be forgotten
              -- (SET NULL when a user, job or upload row goes away).
              IF OLD.status = 'ready' AND (
                   NEW.status, NEW.dataset_id, NEW.number, NEW.parent_id, NEW.operation, NEW.params, NEW.modality,
                   NEW.schema, NEW.row_count, NEW.shard_count, NEW.size_bytes, NEW.content_hash, NEW.report,
                   NEW.stats, NEW.is_synthetic, NEW.ready_at
                 ) IS DISTINCT FROM (
                   OLD.status, OLD.dataset_id, OLD.number, OLD.parent_id, OLD.operation, OLD.params, OLD.modality,
                   OLD.schema, OLD.row_count, OLD.shard_count, OLD.size_bytes, OLD.content_hash, OLD.report,
                   OLD.stats, OLD.is_synthetic, OLD.ready_at
                 ) THEN
                RAISE EXCEPTION 'dataset version % is ready and cannot change', OLD.id;
              END IF;
              RETURN NEW;
            END;
            $$ LANGUAGE plpgsql;
            CREATE TRIGGER datasets_version_immutable BEFORE UPDATE ON datasets_datasetversion
              FOR EACH ROW EXECUTE FUNCTION datasets_version_immutable();
            """,
            """
            DROP TRIGGER IF EXISTS datasets_version_immutable ON datasets_datasetversion;
            DROP FUNCTION IF EXISTS datasets_version_immutable();
            """,
        ),
    ]
