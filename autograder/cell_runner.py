"""The process that runs a notebook's cells, one at a time, for the grader.

It reads one JSON command per line from the command pipe
(``{"index": i, "nonce": "...", "code": "..."}``), runs the code in an IPython shell (so
magics and display work as in a kernel), and writes one JSON line per cell
to the result pipe: ``{"index": i, "nonce": "...", "ok": bool, "error": str | None,
"captures": [...]}`` with the values recorded by :func:`autograder.checks.check`.
The first line it writes, before any cell runs, is ``{"ready": true, "uid": ...}``.

The grader's runs do not start it as a program: :mod:`autograder.zygote` forks a
process that has imported the libraries already and calls :func:`serve`.

In student mode this process runs inside the sandbox and everything it
writes is treated as untrusted data by the grader.
"""

from __future__ import annotations

import json
import os
import sys


def _format_error(result) -> str | None:
    err = result.error_before_exec or result.error_in_exec
    if err is None:
        return None
    return f"{type(err).__name__}: {err}"[:2000]


def serve(cmd_fd: int, res_fd: int, max_reply_bytes: int | None = None) -> int:
    """Run the cells sent on ``cmd_fd``, one reply per cell on ``res_fd``, until end of input."""
    commands = os.fdopen(cmd_fd, "r", encoding="utf-8")
    results = os.fdopen(res_fd, "w", encoding="utf-8")

    os.environ.setdefault("MPLBACKEND", "Agg")
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from autograder import checks

    config = Config()
    config.HistoryManager.enabled = False  # no history database (and no thread writing it)
    shell = InteractiveShell.instance(config=config, colors="NoColor")
    shell.display_formatter.active_types = ["text/plain"]
    shell.InteractiveTB.set_mode("Plain")  # the log's tracebacks; the verdicts do not use them
    fraction = os.environ.get("GD_GRADER_GPU_FRACTION")
    if fraction:
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_per_process_memory_fraction(float(fraction))
        except Exception as err:  # a GPU problem is reported through the cells that need it
            print(f"[grader] could not set the GPU memory fraction: {err}", file=sys.stderr)

    # written before any cell runs, so the grader can trust it
    results.write(json.dumps({"ready": True, "uid": os.getuid()}) + "\n")
    results.flush()
    runner_pid = os.getpid()
    for line in commands:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            break
        result = shell.run_cell(msg["code"], store_history=False)
        if os.getpid() != runner_pid:
            os._exit(0)  # a process forked by the cell: only the runner itself talks to the grader
        sys.stdout.flush()
        sys.stderr.flush()
        reply = {
            "index": msg["index"],
            "nonce": msg["nonce"],
            "ok": result.success,
            "error": _format_error(result),
            "captures": checks.drain(),
        }
        text = json.dumps(reply)
        if max_reply_bytes and len(text) >= max_reply_bytes:  # too much recorded: the values are dropped
            reply["captures"] = [
                {"name": c["name"], "value": {"kind": "unsupported", "type": "too large to record"}}
                for c in reply["captures"]
            ][:1000]
            text = json.dumps(reply)
        results.write(text + "\n")
        results.flush()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return serve(int(argv[0]), int(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
