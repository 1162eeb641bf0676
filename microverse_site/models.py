"""Site-wide records: every call to an LLM endpoint, with its tokens, latency and cost."""
from django.db import models


class LLMCall(models.Model):
    """One request to an OpenAI-compatible endpoint (the key is never stored)."""

    purpose = models.CharField(max_length=40, db_index=True, help_text="task_prompt, task_level, rubric_draft, ...")
    model = models.CharField(max_length=120)
    base_url = models.CharField(max_length=300, blank=True)
    request_hash = models.CharField(max_length=64, db_index=True, help_text="sha256 of model + messages")
    status = models.CharField(max_length=20, help_text="ok / invalid / error")
    attempts = models.PositiveSmallIntegerField(default=1)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    response_text = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
