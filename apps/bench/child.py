"""The child side of the harness (`python -m edgecv.apps.bench.child JOB_JSON`): run one job and
print its result as one JSON line, with this process's peak RSS unless the job read its own.

Jobs are named as "module:function" and imported only when run: a `measure` child must not pay
for the pipeline benchmark's imports before it reads its baseline memory.
"""
from __future__ import annotations

import importlib
import json
import sys

from edgecv.apps.bench.harness import own_peak_rss_mb
from edgecv.errors import EdgecvError

JOBS = {
    "measure": "edgecv.apps.bench.measure:measure",                # benchmark models: one configuration
    "captcha-accuracy": "edgecv.apps.bench.models:captcha_accuracy",
    "pipeline-mode": "edgecv.apps.bench.pipeline:run_mode",         # benchmark pipeline: one mode
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgecv.apps.bench.child JOB_JSON (used by edgecv benchmark)", file=sys.stderr)
        return 2
    request = json.loads(argv[0])
    module, func = JOBS[request["job"]].split(":")
    try:
        result = getattr(importlib.import_module(module), func)(**request["args"])
    except EdgecvError as e:
        print(json.dumps({"error": str(e)}))
        return 3
    result.setdefault("peak_rss_mb", own_peak_rss_mb())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
