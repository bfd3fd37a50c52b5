"""Run a command with CPU burners beside it: ``python tests/under_load.py [--burners 3] -- CMD ...``.

``make test-load`` runs the notebook and browser tests this way, to hold them to what a busy developer
machine or CI runner does to them: every process gets a fraction of a core, messages and outputs arrive
late, and a harness that relies on fixed sleeps or short timeouts breaks.

Each burner is a ``python -c`` busy loop that stops by itself when its time limit passes or when this
script is gone (it checks its parent), so a killed run leaves nothing spinning; normally they are
terminated as soon as the command ends. Exit status: the command's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

BURNER = """
import os, time
parent, deadline = os.getppid(), time.monotonic() + {limit}
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burners", type=int, default=3, help="CPU-bound processes beside the command")
    parser.add_argument("--limit", type=float, default=3600, help="seconds after which burners stop by themselves")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the command after --")

    burners = [subprocess.Popen([sys.executable, "-c", BURNER.format(limit=args.limit)]) for _ in range(args.burners)]
    # SIGTERM (e.g. from make or CI) unwinds through `finally`, so the burners always stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    print(f"under_load: {len(burners)} CPU burners on {os.cpu_count()} cores; load {os.getloadavg()}", flush=True)
    try:
        code = subprocess.call(cmd)
    finally:
        for b in burners:
            b.terminate()
        for b in burners:
            try:
                b.wait(timeout=10)
            except subprocess.TimeoutExpired:
                b.kill()
    print(f"under_load: exit {code} after {time.monotonic() - t0:.0f} s; load {os.getloadavg()}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
