from django.db import migrations


def update(apps, schema_editor):
    from playground.review import schema

    schema.update_functions(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("review", "0004_review_queues"),
    ]

    # PostgreSQL: a message too long for one tsvector no longer refuses its own write.
    operations = [migrations.RunPython(update, migrations.RunPython.noop)]
