from celery import shared_task

from rubrics import candidate_tasks  # noqa: F401  (registers the LLM tasks with the worker)
from rubrics import services


@shared_task(name="rubrics.write_benchmark_export")
def write_benchmark_export(export_id: int) -> None:
    services.benchmark_export_write(export_id=export_id)
