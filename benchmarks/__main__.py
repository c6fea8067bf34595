"""Run every benchmark module (``python -m benchmarks [name ...]``)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="bench_* modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    args = parser.parse_args(argv)
    modules = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    chosen = [m for m in modules if not args.names or m in args.names or m[len("bench_") :] in args.names]
    if not chosen:
        print(f"no benchmark matches {args.names}; available: {modules}", file=sys.stderr)
        return 2
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        module.main(args)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
