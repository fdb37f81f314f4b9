"""A local Ray cluster dies with the process that started it — even when that process is SIGKILLed.

Ray ties its GCS and raylet to the driver that started a local cluster, but not the raylet's children:
its dashboard and runtime-env agents outlive a killed driver for a minute or more. ``watch(pid)``
starts this module as a small detached process that remembers every descendant of ``pid`` (polled
twice a second) and, once ``pid`` is gone, kills those still alive (the same process: pid and start
time). After a clean ``ray.shutdown()`` there is nothing left for it to kill.

    python -m generation.reaper <driver pid>
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 0.5


def watch(pid: int) -> subprocess.Popen:
    """Start the reaper for ``pid`` in its own session (a Ctrl-C to the terminal leaves it to do its job)."""
    return subprocess.Popen([sys.executable, "-m", "generation.reaper", str(pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def reap(pid: int) -> int:
    """Follow ``pid``'s descendants until it exits, then kill the survivors; returns how many were killed."""
    import psutil

    me, seen = os.getpid(), {}
    while True:
        try:
            driver = psutil.Process(pid)
            if driver.status() == psutil.STATUS_ZOMBIE:
                break
            for child in driver.children(recursive=True):
                if child.pid != me:
                    seen[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    killed = 0
    for child_pid, created in seen.items():
        try:
            child = psutil.Process(child_pid)
            if child.create_time() == created:
                child.kill()
                killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


if __name__ == "__main__":
    reap(int(sys.argv[1]))
