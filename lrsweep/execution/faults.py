"""Fault injection for the crash tests: a worker killed as if by the machine (out of memory,
preempted), at a moment a test chooses, without mocking anything in the process under test.

With LRSWEEP_CRASH_ONCE=<path> set, the first work unit to start anywhere (a local worker
process or a Ray task, which inherit the variable) creates <path> and hard-exits its process;
every later one sees the file and trains normally.
"""
from __future__ import annotations

import os

CRASH_ONCE_ENV = "LRSWEEP_CRASH_ONCE"
CRASH_EXIT_CODE = 17


def crash_if_asked() -> None:
    """Hard-exit this process if LRSWEEP_CRASH_ONCE names a file that does not exist yet."""
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(CRASH_EXIT_CODE)
