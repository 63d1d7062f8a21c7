"""Native libraries' start-up chatter kept off the terminal: TensorFlow logs through absl before it reads
TF_CPP_MIN_LOG_LEVEL, and its CUDA probe logs an error on every machine without a GPU, which reads as a
failure. Lines that match known chatter are dropped; every other line is passed on."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def without(noise: re.Pattern[str]) -> Iterator[None]:
    """Run the block with file descriptor 2 sent to a temporary file, then write to stderr the lines that
    do not match ``noise`` (native code writes to the descriptor, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
