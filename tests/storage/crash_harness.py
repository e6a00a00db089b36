"""Shared by the kill -9 tests and their child processes: run a child until SIGKILL,
report lines from a child, check the file afterwards.

A child reports to its stdout, which the parent points at a regular file: with a
pipe nobody reads while the child runs, the child blocks once the pipe's 64 KiB are
full and every kill would land on a stalled process. ``report`` writes each line with
one ``os.write`` (the file is opened with O_APPEND), so lines of different threads
never interleave and a line is on file once the call returned, whatever kills the
process afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
READY = "READY"


def report(*fields: object) -> None:
    """Child side: one line of space-separated fields on stdout, written at once."""
    os.write(1, (" ".join(map(str, fields)) + "\n").encode())


def run_until_killed(child: Path, args: list[str], out: Path, seconds: float) -> list[str]:
    """Start ``child`` with ``args``, wait until its first line is ``READY``, let it
    run ``seconds`` more, SIGKILL it; return the complete lines it reported."""
    err_path = out.with_suffix(".stderr")
    # O_APPEND: the child's threads write at the end of the file, never over each other
    stdout = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        with err_path.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(child), *args],
                stdout=stdout,
                stderr=stderr,
                env=dict(os.environ, PYTHONPATH=SRC),
            )
    finally:
        os.close(stdout)
    try:
        _wait_ready(proc, out, err_path)
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, _tail(err_path)
    complete, _, _ = out.read_bytes().decode(errors="replace").rpartition("\n")
    return complete.splitlines()


def _wait_ready(proc: subprocess.Popen[bytes], out: Path, err_path: Path) -> None:
    # never hang on a child that cannot start (e.g. a starved machine): wait 60 s
    deadline = time.monotonic() + 60.0
    while True:
        with out.open("rb") as f:
            first = f.readline()
        if first.endswith(b"\n"):
            if not first.startswith(READY.encode()):
                raise AssertionError(
                    f"child's first line was {first!r}, not READY: {_tail(err_path)}"
                )
            return
        if proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode}: {_tail(err_path)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"child did not report READY within 60 s: {_tail(err_path)}")
        time.sleep(0.005)


def _tail(path: Path) -> str:
    return path.read_bytes().decode(errors="replace")[-2000:]


def integrity_ok(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    finally:
        conn.close()
