"""Print the interpreter for a test environment: `all` takes 3.11 or 3.12 (MXNet needs NumPy 1), `modern` the newest.

Looks at python3.X on PATH and at pyenv's versions; VGG_PYTHON_ALL / VGG_PYTHON_MODERN override the choice.
Runs on any Python 3; says on stderr what it chose, and exits 2 with the versions it found when none fits.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

#: environment -> the Python versions it accepts, in order of preference
WANTED = {"all": [(3, 11), (3, 12)], "modern": [(3, 13), (3, 12), (3, 11), (3, 10)]}


def candidates() -> list[str]:
    """Interpreter paths on PATH and under pyenv, without duplicates."""
    found = [shutil.which(f"python3.{minor}") for minor in range(10, 20)] + [shutil.which("python3")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3")))
    return list(dict.fromkeys(p for p in found if p))


def version(path: str) -> tuple[int, int, int] | None:
    """The interpreter's version, or None if it does not run (a pyenv shim for a version not selected)."""
    try:
        out = subprocess.run([path, "-c", "import sys, venv; print(*sys.version_info[:3])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    return tuple(int(p) for p in parts) if out.returncode == 0 and len(parts) == 3 else None


def main() -> None:
    env = sys.argv[1]
    override = os.environ.get(f"VGG_PYTHON_{env.upper()}")
    found = {p: v for p in ([override] if override else candidates()) if (v := version(p))}
    for want in WANTED[env]:
        match = [p for p, v in found.items() if v[:2] == want]
        if match:
            best = max(match, key=lambda p: found[p])
            print(f"setup: environment '{env}' uses Python {'.'.join(map(str, found[best]))} ({best})",
                  file=sys.stderr)
            print(best)
            return
    seen = ", ".join(f"{'.'.join(map(str, v))} ({p})" for p, v in found.items()) or "none"
    allowed = " or ".join(f"3.{minor}" for _, minor in WANTED[env])
    print(f"setup: environment '{env}' needs Python {allowed}; found {seen}. "
          f"Install one, or set VGG_PYTHON_{env.upper()} to its path", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
