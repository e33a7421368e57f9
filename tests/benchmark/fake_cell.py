"""A stand-in for ``run_benchmark.py`` in suite tests: no training, just a run record.

Accepts the runner's ``--key=value`` arguments. Test-only keys: ``--fake_sleep=S`` sleeps S
seconds first, ``--fake_fail=True`` exits 3 with an error on stderr, ``--fake_norecord=True``
exits 0 without a record. Every start is appended to ``OUTPUT_DIR/invocations.log``.
"""

import hashlib
import json
import os
import sys
import time


def main() -> int:
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    out = args["output_dir"]
    with open(os.path.join(out, "invocations.log"), "a") as fh:
        fh.write(f"{args['run_id']} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')} "
                 f"{time.time():.3f}\n")
    print("stage: pt", flush=True)
    print("epoch 0 training [time: 0.01s, train loss: 1.0]", flush=True)
    time.sleep(float(args.get("fake_sleep", 0)))
    if args.get("fake_fail") == "True":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: fake failure for testing", file=sys.stderr)
        return 3
    if args.get("fake_norecord") == "True":
        return 0
    h = int(hashlib.sha256(args["run_id"].encode()).hexdigest()[:8], 16) / 16**8
    test = {"hit@5": 0.05 + 0.01 * h, "hit@10": 0.08 + 0.01 * h,
            "ndcg@5": 0.03 + 0.01 * h, "ndcg@10": 0.04 + 0.01 * h}
    rec = {"schema_version": 1, "run_id": args["run_id"], "status": "ok",
           "model": args["model"], "dataset": args["dataset"], "seed": int(args["seed"]),
           "config": {k: v for k, v in args.items() if k not in ("output_dir", "run_id")},
           "valid": test, "test": test, "extra": {},
           "timings": {"train_s": 1.0, "test_s": 0.5, "s_per_epoch": 1.0, "epochs": 1},
           "versions": {}, "device": "cpu", "created": "2026-01-01T00:00:00+00:00"}
    d = os.path.join(out, "runs", args["dataset"], args["model"])
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{args['run_id']}.tmp")
    with open(tmp, "w") as fh:
        json.dump(rec, fh)
    os.replace(tmp, os.path.join(d, f"{args['run_id']}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
