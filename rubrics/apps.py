from django.apps import AppConfig


class RubricsConfig(AppConfig):
    name = "rubrics"
    verbose_name = "Benchmark tasks and rubrics"

    def ready(self):
        from annotation.hooks import register_outcome_handler
        from annotation.models import Workflow
        from rubrics import voting

        # An accepted candidate becomes a BenchmarkTask, a rejected one is marked rejected (rubrics/voting.py).
        register_outcome_handler(Workflow.TASK_VOTING, voting.handle_outcome)
