"""Failpoints: named places where a test can make the pipeline fail on purpose.

``RANSOMEYE_FAILPOINT=<point>[@<action>]`` arms one point; the action is
``raise`` (the default: an :class:`InjectedFault`), ``kill`` (SIGKILL, as a
crash or power loss would), ``interrupt`` (SIGINT, as Ctrl-C would) or
``enospc`` (the disk is full). Points are:

* ``staging:created``: the run's staging directory exists, the stale ones not yet removed;
* ``<step>``: right after a pipeline step finished and wrote its link;
* ``write:<archive>:<n>``: after the n-th member (from 0) of an archive;
* ``sign:<file>``: before the signature of a file is written;
* ``checksums:written``: after ``SHA256SUMS`` is written, before it is signed;
* ``repository:staged``: the TUF repository's new versions are written, its timestamp not yet;
* ``repository:roots-written``: a rotation's new root is written, the timestamp not yet;
* ``repository:rotated``: ``repository.py rotate-key`` published the new root, ``keys/`` not yet changed;
* ``publish:before-exchange``, ``publish:after-exchange``: around the swap (the
  TUF repository's timestamp is replaced right after it).

With the variable unset every point costs one comparison. Nothing else in
the pipeline reads it.
"""

from __future__ import annotations

import errno
import os
import signal

from release.errors import InjectedFault

VARIABLE = "RANSOMEYE_FAILPOINT"
ACTIONS = ("raise", "kill", "interrupt", "enospc")


def _armed() -> tuple[str, str] | None:
    spec = os.environ.get(VARIABLE)
    if not spec:
        return None
    point, _, action = spec.rpartition("@") if "@" in spec else (spec, "", "raise")
    return point, action if action in ACTIONS else "raise"


_ARMED = _armed()


def failpoint(point: str) -> None:
    """Fail here if ``point`` is the armed failpoint; otherwise do nothing."""
    if _ARMED is None or _ARMED[0] != point:
        return
    action = _ARMED[1]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
        return  # the KeyboardInterrupt is raised as this returns
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    raise InjectedFault(f"failure injected at {point} ({VARIABLE}={point})")
