from django.db import migrations, models
import django.contrib.postgres.search
import django.db.models.deletion


def install(apps, schema_editor):
    from playground.review import schema

    schema.install(schema_editor.connection)


def uninstall(apps, schema_editor):
    from playground.review import schema

    schema.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("chat", "0003_attachments"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConversationSearch",
            fields=[
                (
                    "conversation",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="chat.conversation",
                    ),
                ),
                ("document", django.contrib.postgres.search.SearchVectorField()),
            ],
            options={"db_table": "review_conversation_search", "managed": False},
        ),
        migrations.CreateModel(
            name="MessageSearch",
            fields=[
                (
                    "message",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="chat.message",
                    ),
                ),
                (
                    "conversation",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="chat.conversation",
                    ),
                ),
                ("document", django.contrib.postgres.search.SearchVectorField()),
            ],
            options={"db_table": "review_message_search", "managed": False},
        ),
        migrations.RunPython(install, uninstall),
    ]
