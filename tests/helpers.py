"""Small builders shared by tests: subsets of the real release, imported through the real importer."""
import json
from pathlib import Path

from rubrics import release_format, services

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "rubrics" / "fixtures" / "microworldbench"
RELEASE_FILES = (release_format.DRAFT_FILE, release_format.RELEASED_FILE, release_format.TASKS_FILE)


def write_release_subset(directory: Path, indices) -> Path:
    """Write the three release files holding only the tasks in `indices` (real content, unchanged)."""
    wanted = set(indices)
    directory.mkdir(parents=True, exist_ok=True)
    for name in RELEASE_FILES:
        entries = [e for e in json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8")) if e["index"] in wanted]
        (directory / name).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return directory


def import_release_subset(directory: Path, indices=(1, 2, 3, 277)) -> services.ImportReport:
    return services.benchmark_import(directory=write_release_subset(directory, indices))
