#!/usr/bin/env python
"""Benchmark of judge runs (``judging.runs``) and judge-frame extraction (``judging.videos``). See benchmarks/README.md.

    .venv/bin/python benchmarks/judge_bench.py [--tasks 459] [--concurrency 16] [--latency 1.0] [--skip-pool]

(a) Judge-run throughput: a local chat-completions server (``tests.fakes.chat_server.ChatServer``) answers every
    request after a fixed ``--latency`` (1 s). The full release (459 tasks) is imported into a fresh SQLite database
    (or the one ``DATABASE_URL`` names), a model under test gets one small H.264 video per task, its frames are
    extracted, and a judge run (3 calls per task: 1,377 calls) is judged by ``judging.runs.judge_run_execute`` at
    ``--concurrency`` (the ``judge_videos`` command's path: claim with the endpoint's slot limit, prompt with 8
    frames, ``llm.chat`` through the openai SDK, validation, the LLMCall and Judgement rows). Compared with the ideal
    (calls x latency / concurrency) and with a plain ``ThreadPoolExecutor`` of the same size sending the same
    requests through the same SDK client with no database work (once before the run and once after it; their mean
    is the figure compared with).
(b) Frame extraction per video, on a Wan2.1-sized video (832x480, 81 frames, textured): ``video_io.read_frames``
    (one forward decoding pass, what ``frames_extract`` uses) vs seeking to each frame with ``CAP_PROP_POS_FRAMES``
    and reading it (what the published evaluator does), 8 frames each.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_machine import describe  # noqa: E402


def setup_django(workdir: Path) -> None:
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    os.environ["DJANGO_MEDIA_ROOT"] = str(workdir / "media")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "microverse_site.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if WAL and connection.vendor == "sqlite":
        # What benchmarks/README.md recommends for the settings: write-ahead log, fsync at checkpoints only.
        from django.db.backends.signals import connection_created

        def wal(sender, connection, **kwargs):
            if connection.vendor == "sqlite":
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")

        connection_created.connect(wal, weak=False)
        connection.close()

    if connection.vendor == "postgresql":
        # A fresh database every run: recorded answers left by an earlier run would be reused (not paid twice) and
        # make the run look free.
        name = connection.settings_dict["NAME"]
        connection.close()
        import psycopg

        server = {k: connection.settings_dict[k] for k in ("USER", "HOST", "PORT")}
        with psycopg.connect(dbname="postgres", user=server["USER"], host=server["HOST"] or "127.0.0.1",
                             port=server["PORT"] or 5432, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
    call_command("migrate", verbosity=0)


WAL = False
N_CRITERIA = re.compile(r"criteria \((\d+)\):")


def answer(request_json: dict) -> str:
    text = "\n".join(p.get("text", "") for m in request_json["messages"] if isinstance(m.get("content"), list)
                     for p in m["content"] if p.get("type") == "text")
    n = int(N_CRITERIA.search(text).group(1))
    return json.dumps({"scores": [i % 2 for i in range(n)], "reasoning": "benchmark answer"})


# ------------------------------------------------------------------------------------------- (a) judge run


class ServerProcess:
    """``tests.fakes.chat_server.ChatServer`` answering every request after `latency` seconds, in a process of its
    own (as a real endpoint is), so that its threads do not compete with the client for this process's GIL."""

    def __init__(self, latency: float):
        import subprocess

        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(latency)], stdout=subprocess.PIPE,
                                        text=True, cwd=ROOT)
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the chat server did not start")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def serve(latency: float) -> None:
    from tests.fakes.chat_server import ChatServer, Delay

    server = ChatServer().start()
    server.responder = lambda body: Delay(latency, then=answer(body))
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def bench_run(args, workdir: Path) -> dict:
    from django.conf import settings

    from datasets.video_io import make_test_video
    from judging import runs, videos
    from rubrics import services

    server = ServerProcess(args.latency)
    settings.OPENAI_BASE_URL = server.url
    settings.OPENAI_API_KEY = "sk-bench-key"
    settings.LLM_TIMEOUT_SECONDS = 30.0

    started = time.monotonic()
    services.benchmark_import(directory=ROOT / "rubrics" / "fixtures" / "microworldbench")
    from rubrics.models import BenchmarkTask

    indices = list(BenchmarkTask.objects.order_by("index").values_list("index", flat=True))[: args.tasks]
    folder = workdir / "videos"
    source = make_test_video(workdir / "source.mp4", frames=24, size=(160, 96))
    folder.mkdir(exist_ok=True)
    for index in indices:
        shutil.copyfile(source, folder / f"{index}.mp4")
    model = videos.model_register(name="Bench-Model")
    videos.videos_register_folder(model=model, folder=folder)
    setup_s = time.monotonic() - started

    from judging.models import GeneratedVideo

    started = time.monotonic()
    for video in GeneratedVideo.objects.filter(model=model, status="ok"):
        videos.frames_extract(video=video, n=8)
    frames_s = time.monotonic() - started

    run = runs.judge_run_create(model=model, judge_model="bench-judge", concurrency=args.concurrency)
    total = runs.judge_run_progress(run)["pending"]

    pool = None
    if not args.skip_pool:
        # The same requests (built before the clock starts), sent by a plain thread pool through the same SDK client:
        # no claims, no database, no validation. Once before the run and once after it, so that neither side gets the
        # warm connections or the quieter minute alone, and the two pool times show the noise.
        from judging.models import Judgement
        from microverse_site import llm

        client = llm._client(llm.LLMSettings.from_settings())
        requests = [runs.judge_messages_for(j)[0] for j in
                    Judgement.objects.filter(run=run, status="pending")
                    .select_related("run", "task", "video", "rubric_version").order_by("pk")]

        def send(messages):
            return client.chat.completions.create(model="bench-judge", messages=messages).choices[0].message.content

        def pool():
            started, cpu = time.monotonic(), time.process_time()
            with ThreadPoolExecutor(max_workers=args.concurrency) as executor:
                answers = list(executor.map(send, requests))
            assert len(answers) == total
            return time.monotonic() - started, time.process_time() - cpu

    pools = [pool()] if pool else []
    started, cpu = time.monotonic(), time.process_time()
    final = runs.judge_run_execute(run=run)
    run_s, run_cpu = time.monotonic() - started, time.process_time() - cpu
    from microverse_site.models import LLMCall

    calls = LLMCall.objects.filter(purpose="judge", status="ok").count()
    assert final["scored"] == total == calls, (final, total, calls)
    if pool:
        pools.append(pool())
    pool_s = sum(s for s, _ in pools) / len(pools) if pools else None
    pool_cpu = sum(c for _, c in pools) / len(pools) if pools else None
    server.close()
    ideal = total * args.latency / args.concurrency
    return {"tasks": len(indices), "calls": total, "concurrency": args.concurrency, "latency_s": args.latency,
            "ideal_s": round(ideal, 2), "run_s": round(run_s, 2), "run_vs_ideal": round(run_s / ideal, 3),
            "thread_pool_s": round(pool_s, 2) if pool_s else None,
            "thread_pool_before_after_s": [round(s, 2) for s, _ in pools],
            "run_vs_thread_pool": round(run_s / pool_s, 3) if pool_s else None,
            "run_cpu_ms_per_call": round(1000 * run_cpu / total, 1),
            "thread_pool_cpu_ms_per_call": round(1000 * pool_cpu / total, 1) if pool_cpu else None,
            "setup_s": round(setup_s, 1), "frames_extract_all_s": round(frames_s, 2),
            "frames_extract_per_video_ms": round(1000 * frames_s / max(1, len(indices)), 1)}


# ------------------------------------------------------------------------------------------ (b) frames


def bench_frames(workdir: Path, repeats: int = 10) -> dict:
    import cv2
    import numpy as np

    from datasets import video_io
    from judging.videos import frame_positions

    rng = np.random.default_rng(7)
    texture = rng.integers(0, 255, (480 * 2, 832 * 2, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (0, 0), 3)

    def draw(index, width, height):
        x, y = (index * 7) % width, (index * 3) % height
        return np.ascontiguousarray(texture[y:y + height, x:x + width])

    path = video_io.make_test_video(workdir / "wan-sized.mp4", frames=81, size=(832, 480), fps=16.0, draw=draw)
    positions = frame_positions(video_io.probe(path).frame_count, 8)

    def forward():
        return video_io.read_frames(path, positions)

    def seek():
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        frames = []
        for position in positions:
            capture.set(cv2.CAP_PROP_POS_FRAMES, position)
            ok, frame = capture.read()
            frames.append(frame)
        capture.release()
        return frames

    a, b = forward(), seek()
    same = all(np.abs(x.astype(int) - y.astype(int)).max() <= 2 for x, y in zip(a, b))
    timings = {}
    for name, fn in (("forward", forward), ("seek", seek)):
        fn()
        best = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            best.append(time.perf_counter() - started)
        timings[name] = sorted(best)[len(best) // 2]
    return {"video": "832x480, 81 frames, H.264", "frames": 8, "positions": positions,
            "forward_read_frames_ms": round(1000 * timings["forward"], 1),
            "seek_per_frame_ms": round(1000 * timings["seek"], 1),
            "forward_vs_seek": round(timings["forward"] / timings["seek"], 3), "same_frames": same}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(float(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=459)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--skip-pool", action="store_true", help="Skip the plain thread-pool comparison")
    parser.add_argument("--skip-run", action="store_true", help="Only the frame-extraction comparison")
    parser.add_argument("--sqlite-wal", action="store_true",
                        help="SQLite only: journal_mode=WAL and synchronous=NORMAL on every connection")
    args = parser.parse_args()
    global WAL
    WAL = args.sqlite_wal
    print(f"Machine: {describe()}", flush=True)
    import logging

    logging.disable(logging.INFO)  # one log line per call would measure the terminal
    with tempfile.TemporaryDirectory(prefix="judge-bench-") as tmp:
        workdir = Path(tmp)
        setup_django(workdir)
        from django.db import connection

        print(f"Database: {connection.vendor}" + (" (WAL, synchronous=NORMAL)" if WAL and connection.vendor == "sqlite"
                                                  else ""), flush=True)
        frames = bench_frames(workdir)
        print("Frame extraction:", json.dumps(frames), flush=True)
        if not args.skip_run:
            result = bench_run(args, workdir)
            print("Judge run:", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
