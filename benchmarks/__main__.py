"""Run every ``benchmarks/bench_*.py`` in one process and print the comparisons.

Usage: ``python -m benchmarks [--quick] [NAME ...]`` where NAME filters modules
(e.g. ``memory``, ``redis``, ``sweep``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--full", action="store_true", help="also the largest sizes (scale: 100M events)")
    parser.add_argument("names", nargs="*", help="only modules whose name contains one of these")
    args = parser.parse_args(argv)
    modules = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    if args.names:
        modules = [m for m in modules if any(n in m for n in args.names)]
    unmet = []
    for name in modules:
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"# {name}", flush=True)
        full = {"full": True} if args.full and "full" in inspect.signature(module.run).parameters else {}
        for comparison in module.run(quick=args.quick, **full):
            print(comparison.render(), flush=True)
            unmet += [f"{name}: {t.goal}: {t.figure}" for t in comparison.targets if not t.met]
        print(f"# {name} took {time.perf_counter() - start:.1f} s\n", flush=True)
    if unmet:
        print("targets not met:\n  " + "\n  ".join(unmet))
    else:
        print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
