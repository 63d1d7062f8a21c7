"""Write a suite run's record (kind suite): its environment, duration and exit status, for .ci/test and
.ci/quick. Usage: record_suite.py OUT NAME SECONDS EXIT_STATUS SCRIPT [PYTEST_ARGS...]"""

import shlex
import sys

from common.tools import records

out, name, seconds, code, script, *args = sys.argv[1:]
found = [records.result("seconds", "s", int(seconds)), records.result("exit_status", "", int(code))]
command = shlex.join(["bash", script, *args])
print("test: wrote", records.write(records.make("suite", found, name=name, command=command), out))
