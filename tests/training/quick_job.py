"""A quick stand-in for the trainer in job scripts (the real one, training_jobs.train, is tested separately): reads the
job's config.json like the trainer, prints one JSON metrics line per step and appends it to <output_dir>/metrics.jsonl,
writes a checkpoint folder (checkpoints/checkpoint-<step:06d>/trainer_state.json) every save_every steps, and exits
with the given code.

    python tests/training/quick_job.py --config CONFIG.json [--steps N] [--sleep S] [--exit-code C] [--resume]
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    out = Path(config["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or config.get("max_steps", 10)
    save_every = config.get("save_every", 5)
    first = 1
    if args.resume:
        done = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
        first = (done[-1] + 1) if done else 1
        print(f"resuming after step {first - 1}", flush=True)
    print(f"quick job: {steps} steps, lr {config.get('learning_rate')}", flush=True)
    with open(out / "metrics.jsonl", "a") as metrics:
        for step in range(first, steps + 1):
            started = time.monotonic()
            time.sleep(args.sleep)
            record = {"step": step, "loss": round(1.0 + 2.0 * math.exp(-step / 4), 5), "lr": 1e-5,
                      "seconds": round(time.monotonic() - started, 4), "gpu_memory_mb": 0.0}
            line = json.dumps(record)
            print(line, flush=True)
            metrics.write(line + "\n")
            metrics.flush()
            if step % save_every == 0:
                folder = out / "checkpoints" / f"checkpoint-{step:06d}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "trainer_state.json").write_text(json.dumps({"step": step, "loss": record["loss"]}))
    if args.exit_code:
        print(f"quick job: exiting with {args.exit_code}", file=sys.stderr, flush=True)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
