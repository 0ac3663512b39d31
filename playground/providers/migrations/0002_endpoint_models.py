import django.db.models.deletion
from django.db import migrations, models

import playground.providers.models


def models_from_lines(apps, schema_editor):
    """Each endpoint's one-id-per-line list becomes rows, with the endpoint's shared values."""
    CustomEndpoint = apps.get_model("providers", "CustomEndpoint")
    EndpointModel = apps.get_model("providers", "EndpointModel")
    for endpoint in CustomEndpoint.objects.all():
        ids = dict.fromkeys(line.strip() for line in endpoint.model_ids.splitlines())
        for model_id in ids:
            if model_id:
                EndpointModel.objects.create(
                    endpoint=endpoint,
                    model_id=model_id,
                    context_window=endpoint.context_window,
                    max_output=endpoint.max_output,
                    images=endpoint.supports_images,
                )


def lines_from_models(apps, schema_editor):
    CustomEndpoint = apps.get_model("providers", "CustomEndpoint")
    for endpoint in CustomEndpoint.objects.all():
        rows = list(endpoint.models.all())
        endpoint.model_ids = "\n".join(r.model_id for r in rows)
        endpoint.supports_images = any(r.images for r in rows)
        endpoint.save()


class Migration(migrations.Migration):
    dependencies = [("providers", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="EndpointModel",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model_id", models.CharField(help_text="As the server names it.", max_length=200)),
                ("offered", models.BooleanField(default=True, help_text="Users can pick it.")),
                ("context_window", models.PositiveIntegerField(blank=True, null=True)),
                ("max_output", models.PositiveIntegerField(blank=True, null=True)),
                ("images", models.BooleanField(default=False)),
                ("tools", models.BooleanField(default=False)),
                ("json_schema", models.BooleanField(default=False)),
                ("thinking", models.BooleanField(default=False)),
                ("logprobs", models.BooleanField(default=False)),
                (
                    "price_per_message",
                    models.DecimalField(blank=True, decimal_places=6, max_digits=10, null=True),
                ),
                ("probe_results", models.JSONField(blank=True, default=dict)),
                ("probed_at", models.DateTimeField(blank=True, null=True)),
                ("created", models.DateTimeField(auto_now_add=True)),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="models",
                        to="providers.customendpoint",
                    ),
                ),
            ],
            options={
                "ordering": ["model_id"],
                "constraints": [
                    models.UniqueConstraint(fields=("endpoint", "model_id"), name="one_model_id")
                ],
            },
        ),
        migrations.AddField(
            model_name="customendpoint",
            name="param_groups",
            field=models.JSONField(
                default=playground.providers.models._default_groups,
                help_text="Which parameter groups the server takes (see specs.PARAM_GROUPS).",
            ),
        ),
        migrations.AddField(
            model_name="customendpoint",
            name="updated",
            field=models.DateTimeField(auto_now=True),
        ),
        migrations.RunPython(models_from_lines, lines_from_models),
        migrations.RemoveField(model_name="customendpoint", name="model_ids"),
        migrations.RemoveField(model_name="customendpoint", name="context_window"),
        migrations.RemoveField(model_name="customendpoint", name="max_output"),
        migrations.RemoveField(model_name="customendpoint", name="supports_images"),
    ]
