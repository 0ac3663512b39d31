from django.db import migrations


def no_verdict_when_stopped(apps, schema_editor):
    """A stopped item was saved as failed its checks (passed False), and an item failed
    after its worker was lost twice with no verdict (passed None): the grid drew the one
    failed and listed it under Failures, and left the other out."""
    Item = apps.get_model("experiments", "Item")
    Item.objects.filter(status="stopped", passed=False).update(passed=None)
    Item.objects.filter(status="failed", passed__isnull=True).update(passed=False)


class Migration(migrations.Migration):
    dependencies = [("experiments", "0001_initial")]

    operations = [migrations.RunPython(no_verdict_when_stopped, migrations.RunPython.noop)]
