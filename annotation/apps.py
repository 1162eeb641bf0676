from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"

    def ready(self):
        # Connects the Decision signals that schedule a recompute of the precomputed agreement report.
        from annotation import agreement_cache  # noqa: F401
