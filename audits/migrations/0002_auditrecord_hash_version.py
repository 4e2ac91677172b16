from django.db import migrations, models


class Migration(migrations.Migration):
    """Records sealed before this migration used hash version 1; new ones use the current
    version (set explicitly by the service). Both keep verifying with their own version."""

    dependencies = [("audits", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="auditrecord",
            name="hash_version",
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.AlterField(
            model_name="auditrecord",
            name="hash_version",
            field=models.PositiveSmallIntegerField(default=2),
        ),
    ]
