"""Run by the packaging tests in a clean interpreter (a core-only venv, or ``python -I -S`` on the
Lambda zip): invokes the Lambda entry twice on the canonical SQS event per store URL, and prints a
JSON report of what it decided, where dedup came from and which optional packages exist."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

OPTIONAL = ("boto3", "botocore", "pandas", "numpy", "matplotlib", "moto", "fakeredis", "yaml", "tqdm")
HANDLED: list[str] = []


def record(event: dict) -> None:
    HANDLED.append(event["id"])


def main(path_entry: str, event_path: str, *store_urls: str) -> dict:
    if path_entry != "-":
        sys.path.insert(0, path_entry)
    import dedup
    from dedup.aws.lambda_handler import handler
    from dedup.stores import open_store

    with open(event_path) as file:
        event = json.load(file)
    report: dict = {"dedup": dedup.__file__, "stores": {}}
    for url in store_urls:
        os.environ.update(DEDUP_HANDLER="__main__:record", DEDUP_STORE_URL=url,
                          DEDUP_PREFIX=f"probe-{os.getpid()}:")
        HANDLED.clear()
        decided = [[f["itemIdentifier"] for f in handler(event)["batchItemFailures"]] for _ in range(2)]
        report["stores"][url] = {"failures": decided, "handled": list(HANDLED)}
    report["loaded"] = sorted(name for name in OPTIONAL if name in sys.modules)
    report["installed"] = sorted(name for name in OPTIONAL if importlib.util.find_spec(name) is not None)
    try:
        open_store("dynamodb://a-table")
    except Exception as exc:
        report["dynamodb"] = f"{type(exc).__name__}: {exc}"
    return report


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
