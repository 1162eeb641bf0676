"""Published results files: reading (tolerant of judge mistakes, strict about structure), import / export round trip,
and benchmark_report's numbers computed by hand on small files built from real tasks, malformed entries included."""
import json

import pytest
from django.core.management import CommandError, call_command

from judging import published, report, runs
from judging.models import GeneratedVideo, JudgeRun, Judgement
from rubrics import scoring
from tests.helpers import FIXTURE_DIR, import_release_subset

TASKS = (1, 2, 3, 16, 277)  # 1, 2, 3 Cellular; 16 Subcellular; 277 Organ (4 instruction criteria)


def ev(scores, reasoning="because", raw=None):
    raw = raw if raw is not None else json.dumps({"scores": scores, "reasoning": reasoning})
    return {"raw_response": raw, "parsed_result": {"scores": scores, "reasoning": reasoning}}


def entry(index, sci, vis, ins, model="Alpha"):
    item = {"index": index, "video_path": f"./{model}/{index}.mp4"}
    for key, value in (("scientific_eval", sci), ("visual_eval", vis), ("instruction_eval", ins)):
        if value is not MISSING:
            item[key] = value
    return item


MISSING = object()

ALPHA = [
    entry(1, ev([1, 1, 0, 1, 0]), ev([1, 0, 1, 0, 1]), ev([1, 1, 1, 1, 1])),          # well formed
    entry(2, ev([1, 1, 1]), ev([1, 1, 1, 1, 0]), ev([1, 1, 1, 1, 1])),                 # short list; keys 11..55
    entry(3, ev([1, 2, 1, 1, 0]), ev([1, 1, 1, 1, 0, 1, 1]), ev([0, 0, 0, 0, 1])),     # a 2; a long list
    entry(16, ev([1, 1, 1, 1, 1]), ev([]), ev([1, 1, 1, 1, 1])),                       # an empty list
    entry(277, ev([1, 1, 1, 0, 1]), ev([1, 1, 0, 0, 1]), ev([1, 1, 1, 0])),            # well formed (4 instr.)
]
BETA = [
    entry(1, ev([1, 1, 1, 1, 1]), MISSING, ev([1, 1, 1, 1, 1]), "Beta"),              # a missing dimension
    entry(2, ev([0, 1, 1, 0, 1]), ev([0, 0, 0, 0, 0]), ev([1, 0, 1, 0, 1]), "Beta"),
    entry(3, ev([1, 1, 1, 1, 1]), ev([1, 1, 1, 1, 1]),
          {"raw_response": "I cannot judge this video.", "parsed_result": None}, "Beta"),  # null parsed_result
    entry(16, ev([1, 1, 1, 1, 1]), ev([1, 0, 1, 0, 0]), ev([0, 1, 0, 1, 1]), "Beta"),
    entry(277, ev("1,1,1,0,1"), ev([1, 1, 1, 1, 1]), ev([1, 1, 1, 1]), "Beta"),        # scores not a list
]

# By hand, from the released (normalised) weights of these tasks; S_norm = max(0, S / sum(w+)) * 100.
A1, A2, A3, A277 = 4.9 / 6.6 * 100, 100.0, 3.4 / 6.3 * 100, 4.3 / 5.4 * 100
B2, B16 = 1.0 / 4.9 * 100, 4.9 / 6.3 * 100
EXPECTED = {
    "Alpha": {
        "valid_tasks": 4,
        "average": (A1 + A2 + A3 + A277) / 4,
        "levels": {"Organ-level": A277, "Cellular-level": (A1 + A2 + A3) / 3, "Subcellular-level": None},
        "dimensions": {"scientific": (2.5 / 3.5 * 100 + 100 + 2.5 / 3.5 * 100 + 2.5 / 3.0 * 100) / 4,
                       "visual": (50.0 + 100 + 100 + 0.8 / 1.4 * 100) / 4,
                       "instruction": (100 + 0.0 + 0.0 + 100) / 4},
        "malformed_tasks": [2, 3, 16],
    },
    "Beta": {
        "valid_tasks": 2,
        "average": (B2 + B16) / 2,
        "levels": {"Organ-level": None, "Cellular-level": B2, "Subcellular-level": B16},
        "dimensions": {"scientific": (1.0 / 3.5 * 100 + 100) / 2, "visual": (0.0 + 1.0 / 1.4 * 100) / 2,
                       "instruction": (0.0 + 0.4 / 1.4 * 100) / 2},
        "malformed_tasks": [1, 2, 3, 277],
    },
}


def approx_report(expected):
    def fix(value):
        if isinstance(value, float):
            return pytest.approx(value, rel=1e-12, abs=1e-12)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value
    return fix(expected)


@pytest.fixture
def benchmark(db, tmp_path):
    import_release_subset(tmp_path / "release", TASKS)


def write(tmp_path, name, entries):
    path = tmp_path / f"{name}_result.json"
    path.write_text(json.dumps(entries, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def import_file(tmp_path, name, entries):
    call_command("import_judgments", str(write(tmp_path, name, entries)), "--model", name)


# --------------------------------------------------------------------------------------------- reading


def test_reading_keeps_judge_mistakes_as_they_are():
    entries = published.parse_results(BETA)
    by_index = {e.index: e for e in entries}
    assert "visual" not in by_index[1].evals and by_index[1].scores("visual") is None
    assert by_index[3].parsed_result("instruction") is None and by_index[3].scores("instruction") is None
    assert by_index[3].raw_response("instruction") == "I cannot judge this video."
    assert by_index[277].scores("scientific") == "1,1,1,0,1"
    assert by_index[2].video_path == "./Beta/2.mp4" and by_index[2].reasoning("visual") == "because"


@pytest.mark.parametrize("text, message", [
    ("{not json", "the results file is not JSON: Expecting property name enclosed in double quotes at line 1"),
    ('{"index": 1}', "the results file must be a JSON list of entries, not a dict"),
    ('[1]', "entry 1 is a int, not an object"),
    ('[{"index": 1}, {"video_path": "a.mp4"}]', 'entry 2 has no "index"'),
    ('[{"index": "7"}]', 'entry 1 has index "7": it must be a whole number >= 0'),
    ('[{"index": true}]', "entry 1 has index true"),
    ('[{"index": 4}, {"index": 5}, {"index": 4}]', "index 4 appears twice (entries 1 and 3)"),
])
def test_structural_errors_have_a_clear_one_line_message(text, message):
    with pytest.raises(published.PublishedFormatError) as info:
        published.loads_results(text)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_writing_sorts_by_index_and_keeps_unicode():
    entries = published.parse_results([{"index": 9, "video_path": "é/9.mp4"}, {"index": 2, "video_path": "b"}])
    text = published.dumps_results(entries)
    assert [e["index"] for e in json.loads(text)] == [2, 9] and "é/9.mp4" in text


# ----------------------------------------------------------------------------------------- import / report


def test_benchmark_report_reproduces_hand_computed_values(benchmark, tmp_path):
    import_file(tmp_path, "Alpha", ALPHA)
    import_file(tmp_path, "Beta", BETA)
    data = report.benchmark_report()
    assert data == {"models": approx_report(EXPECTED)}


def test_report_equals_the_scoring_module_on_the_release_files(benchmark, tmp_path):
    """The same numbers straight from the release files and the published entries, without the database."""
    rubrics = {e["index"]: scoring.rubric_from_release_entry(e)
               for e in json.loads((FIXTURE_DIR / "MWBenchRubrics_norm.json").read_text()) if e["index"] in TASKS}
    levels = {e["index"]: e["final_label"] for e in json.loads((FIXTURE_DIR / "finaltasks.json").read_text())}
    import_file(tmp_path, "Alpha", ALPHA)
    import_file(tmp_path, "Beta", BETA)
    got = report.benchmark_report()["models"]
    for name, file_entries in (("Alpha", ALPHA), ("Beta", BETA)):
        results = [scoring.score_task(index=e.index, level=levels[e.index], rubric=rubrics[e.index],
                                      judgement={d: e.scores(d) for d in scoring.DIMENSIONS})
                   for e in published.parse_results(file_entries)]
        summary = scoring.summarise_model(results)
        assert got[name] == {"valid_tasks": summary.valid_tasks, "average": summary.average,
                             "levels": summary.levels, "dimensions": summary.dimensions,
                             "malformed_tasks": summary.malformed_tasks}


def test_import_stores_raw_scores_and_flags_malformed_dimensions(benchmark, tmp_path):
    import_file(tmp_path, "Alpha", ALPHA)
    import_file(tmp_path, "Beta", BETA)
    run = JudgeRun.objects.get(model__name="Alpha")
    assert (run.judge_model, run.status, run.source_file) == ("imported", "done", "Alpha_result.json")
    rows = {(j.task.index, j.dimension): j for j in Judgement.objects.filter(run=run).select_related("task")}
    assert len(rows) == 15
    assert rows[(1, "scientific")].status == "scored" and rows[(1, "scientific")].scores == [1, 1, 0, 1, 0]
    short = rows[(2, "scientific")]
    assert (short.status, short.scores, short.flag_reason) == ("flagged", [1, 1, 1], "3 scores for 5 criteria")
    assert rows[(2, "instruction")].status == "scored"  # the judge's list is fine; the rubric's numbering is not
    assert rows[(3, "scientific")].flag_reason == "score 2 is not 0/1 (entry 2, counted as 0)"
    assert rows[(3, "visual")].flag_reason == "7 scores for 5 criteria"
    assert rows[(16, "visual")].flag_reason == "empty score list"
    beta = {(j.task.index, j.dimension): j for j in Judgement.objects.filter(run__model__name="Beta")
            .select_related("task")}
    assert (1, "visual") not in beta and len(beta) == 14
    assert beta[(3, "instruction")].status == "flagged" and beta[(3, "instruction")].scores is None
    assert beta[(3, "instruction")].flag_reason == runs.PARSED_NULL
    assert beta[(277, "scientific")].scores == "1,1,1,0,1"
    assert beta[(277, "scientific")].flag_reason == "scores is a str, not a list"
    video = GeneratedVideo.objects.get(model__name="Beta", task__index=2)
    assert (video.status, video.file.name) == ("missing", "./Beta/2.mp4")


@pytest.mark.parametrize("name, entries", [("Alpha", ALPHA), ("Beta", BETA)])
def test_export_round_trips_an_imported_file(benchmark, tmp_path, name, entries):
    import_file(tmp_path, name, entries)
    out = tmp_path / "exported.json"
    call_command("export_judgments", "--model", name, "--out", str(out))
    assert json.loads(out.read_text(encoding="utf-8")) == entries
    # and the exported file imports to the same report
    call_command("import_judgments", str(out), "--model", name)
    assert report.benchmark_report()["models"][name] == approx_report(EXPECTED[name])
    assert JudgeRun.objects.filter(model__name=name).count() == 2


def test_export_keeps_what_the_format_does_not_define(benchmark, tmp_path):
    """Keys of the entry, of a *_eval and of its parsed_result that the format does not name, a reasoning that is
    not a string or is missing, a video_path that is not a path, an entry without any *_eval: all come back as the
    file had them."""
    odd = [
        {**entry(1, {**ev([1, 1, 0, 1, 0]), "latency_s": 2.5},
                 {"raw_response": "{}", "parsed_result": {"scores": [1, 0, 1, 0, 1], "confidence": 0.9}},
                 {"raw_response": "x", "parsed_result": {"scores": [1, 1, 1, 1, 1], "reasoning": {"why": "ok"}}}),
         "judge": "gpt-4o-2024-08-06", "seed": 7},
        {"index": 2, "video_path": None, "note": "no evaluation for this one"},
        entry(3, ev([1, 1, 1, 1, 1]), MISSING, None),
    ]
    import_file(tmp_path, "Odd", odd)
    out = tmp_path / "exported.json"
    call_command("export_judgments", "--model", "Odd", "--out", str(out))
    assert json.loads(out.read_text(encoding="utf-8")) == odd
    # what the site scores is what it scored before: the kept keys change nothing
    rows = {(j.task.index, j.dimension): j for j in Judgement.objects.filter(run__model__name="Odd")
            .select_related("task")}
    assert rows[(1, "scientific")].scores == [1, 1, 0, 1, 0] and rows[(1, "visual")].reasoning == ""
    assert rows[(1, "instruction")].reasoning == '{"why": "ok"}'
    assert rows[(3, "instruction")].flag_reason == runs.PARSED_NULL and (3, "visual") not in rows


def test_the_latest_run_counts(benchmark, tmp_path):
    import_file(tmp_path, "Alpha", BETA)
    import_file(tmp_path, "Alpha", ALPHA)
    assert report.benchmark_report()["models"]["Alpha"] == approx_report(EXPECTED["Alpha"])
    assert report.benchmark_report(rubric_label="draft") == {"models": {}}


def test_import_is_all_or_nothing(benchmark, tmp_path):
    path = write(tmp_path, "Gamma", ALPHA + [entry(9999, ev([1]), ev([1]), ev([1]))])
    with pytest.raises(CommandError, match="1 entries name tasks that are not in the benchmark: 9999"):
        call_command("import_judgments", str(path), "--model", "Gamma")
    assert not JudgeRun.objects.exists() and not Judgement.objects.exists()
    bad = tmp_path / "bad.json"
    bad.write_text('[{"index": 1}, {"index": 1}]')
    with pytest.raises(CommandError, match=r"bad.json: index 1 appears twice \(entries 1 and 2\)"):
        call_command("import_judgments", str(bad), "--model", "Gamma")


def test_benchmark_report_command_json_and_markdown(benchmark, tmp_path, capsys):
    import_file(tmp_path, "Alpha", ALPHA)
    import_file(tmp_path, "Beta", BETA)
    capsys.readouterr()
    call_command("benchmark_report", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data == {"models": approx_report(EXPECTED)}
    call_command("benchmark_report", "--markdown", "--release", "released")
    text = capsys.readouterr().out
    assert "| Model | Average | Organ | Cellular | Subcellular |" in text
    assert "| Alpha | 77.0 | 79.6 | 76.1 | n/a |" in text
    assert "| Beta | 49.1 | n/a | 20.4 | 77.8 |" in text
    assert "| Model | Scientific | Visual | Instruction |" in text
    assert "| Alpha | 81.5 | 76.8 | 50.0 |" in text
    assert "| Beta | 64.3 | 35.7 | 14.3 |" in text
    assert text.index("| Alpha | 77.0") < text.index("| Beta | 49.1")  # best average first
