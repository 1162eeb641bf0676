"""The database itself refuses changes to the action log: UPDATE and DELETE on PostgreSQL; UPDATE on SQLite (where
the test runner empties tables with DELETE, so only updates can be refused there)."""
from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION annotation_actionlog_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the action log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotation_actionlog_no_update_delete
    BEFORE UPDATE OR DELETE ON annotation_actionlog
    FOR EACH ROW EXECUTE FUNCTION annotation_actionlog_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS annotation_actionlog_no_update_delete ON annotation_actionlog;
DROP FUNCTION IF EXISTS annotation_actionlog_append_only();
"""

SQLITE_CREATE = """
CREATE TRIGGER annotation_actionlog_no_update BEFORE UPDATE ON annotation_actionlog
BEGIN SELECT RAISE(ABORT, 'the action log is append-only'); END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS annotation_actionlog_no_update;"


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(CREATE)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_CREATE)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(DROP)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_DROP)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
