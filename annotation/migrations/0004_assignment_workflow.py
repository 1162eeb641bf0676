from django.db import migrations, models

WORKFLOWS = [('task_voting', 'Task voting'), ('rubric_revision', 'Rubric revision'),
             ('clip_verification', 'Clip verification'), ('caption_check', 'Caption checking'),
             ('human_eval', 'Human evaluation (scoring generated videos)'), ('pairwise', 'Blind pairwise preference')]


class Migration(migrations.Migration):
    """Copy each assignment's item workflow onto the assignment, so a queue reads one table's index."""

    dependencies = [
        ('annotation', '0003_workflow_human_eval_pairwise'),
    ]

    operations = [
        migrations.AddField(
            model_name='assignment',
            name='workflow',
            field=models.CharField(choices=WORKFLOWS, default='', editable=False, max_length=40),
            preserve_default=False,
        ),
        migrations.RunSQL(
            "UPDATE annotation_assignment SET workflow = (SELECT r.workflow FROM annotation_reviewitem r "
            "WHERE r.id = annotation_assignment.item_id)",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name='assignment',
            index=models.Index(fields=['expert', 'workflow', 'status', 'position'], name='assignment_queue'),
        ),
        migrations.AddIndex(
            model_name='assignment',
            index=models.Index(fields=['expert', 'workflow', 'position'], name='assignment_queue_order'),
        ),
    ]
