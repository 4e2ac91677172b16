from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def mark_existing_sealed(apps, schema_editor):
    """Records written before sealing moved off the request path were chained when inserted."""
    AuditRecord = apps.get_model("audits", "AuditRecord")
    AuditRecord.objects.filter(sealed_at__isnull=True, chain_seq__isnull=False).update(sealed_at=F("created_at"))


class Migration(migrations.Migration):
    """Records are inserted unsealed (chain_seq, prev_hash, hash NULL) and sealed later by
    audits.services.audit_seal_chains; sealed_at says when."""

    dependencies = [
        ("accounts", "0002_refresh_token_families"),
        ("audits", "0002_auditrecord_hash_version"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="auditrecord",
            name="sealed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="auditrecord",
            name="chain_seq",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="auditrecord",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="auditrecord",
            name="prev_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddIndex(
            model_name="auditrecord",
            index=models.Index(
                condition=models.Q(("chain_seq__isnull", True)), fields=["tenant", "id"], name="audit_unsealed_idx"
            ),
        ),
        migrations.RunPython(mark_existing_sealed, migrations.RunPython.noop),
    ]
