"""Run a command with inherited stdin/stdout and append its peak RSS (KiB) to a log file.

scripts/bench wraps both tools' filter processes with it: `memwrap.py LOG cmd args...`.
"""

import resource
import subprocess
import sys

rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "a") as f:
    f.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
sys.exit(rc)
