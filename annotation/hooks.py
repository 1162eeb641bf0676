"""What happens when a panel reaches its outcome, per workflow. Apps register their handler in AppConfig.ready()."""
from typing import Callable

_OUTCOME_HANDLERS: dict[str, Callable] = {}


def register_outcome_handler(workflow: str, handler: Callable) -> None:
    """`handler(item, outcome)` runs inside the transaction that decided the item (outcome: accepted / rejected)."""
    _OUTCOME_HANDLERS[workflow] = handler


def run_outcome_handler(item, outcome: str) -> None:
    handler = _OUTCOME_HANDLERS.get(item.workflow)
    if handler is not None:
        handler(item, outcome)
