"""Round-trip timeouts for tests that talk to a real Redis.

The defaults (READ_TIMEOUT 0.1 s, CONNECT_TIMEOUT 0.5 s) are chosen for a
production Redis next door. On a loaded CI machine (2 cores, load 15+) a
local round trip can stall longer than that, and the call then reports
BYPASS (or a bulk operation raises "store timed out"), which is not what
a test of caching means to check. So every Redis test runs with these
instead: hang guards, never reached by a server that answers. Tests
about timeouts (a paused server) set their own, see ``PAUSED``.
"""

from __future__ import annotations

#: Settings for every Redis test: a stalled round trip is waited for.
GENEROUS = {"READ_TIMEOUT": 30.0, "CONNECT_TIMEOUT": 30.0}

#: For the tests that pause the server (SIGSTOP) to see a timeout: short
#: enough that each paused round trip costs little, long enough that the
#: round trips before and after the pause are not cut short by a loaded
#: machine (0.1 s was: those reported BYPASS too).
PAUSED = {"READ_TIMEOUT": 1.0}

#: The longest a call that meets a paused server may take, as a hang
#: guard: a few timed-out round trips plus the live computation. A call
#: without timeouts would never return.
PAUSED_CALL_LIMIT = 15.0
