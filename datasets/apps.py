from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "datasets"
    verbose_name = "Data pipeline, clip verification and captions"

    def ready(self):
        from annotation.hooks import register_outcome_handler
        from annotation.models import Workflow
        from datasets import captions, verification

        # A verified clip / a checked caption (datasets/verification.py, datasets/captions.py).
        register_outcome_handler(Workflow.CLIP_VERIFICATION, verification.handle_outcome)
        register_outcome_handler(Workflow.CAPTION_CHECK, captions.handle_outcome)
        # Celery's autodiscovery imports only datasets.tasks; the caption task lives beside it.
        from datasets import caption_tasks  # noqa: F401
