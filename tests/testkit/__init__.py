"""What every test suite shares (smoke, dev, ha, swarm, adopt; the unit tests may use it too).

- checks: `check` (a named check printing PASS or FAIL with what it saw) and `record` (stage timings);
- require: `require(condition, reason, runs_in)`, a skip that names where the check does run and
  fails under CI=true;
- names: `unique_name(prefix)`, the per-run names a suite gives what it creates on the Docker engine,
  recorded so the session's end can find what is its own (leftovers.py);
- stacks: the images the suites run, free ports on 127.0.0.1, `invoke` as a subprocess, an .env from
  `env.init`, and what of a name is still on the engine;
- status: `invoke prod.status --json` read into rows;
- streamed: `Streamed`, an `invoke` in the background whose stderr a test reads line by line;
- websocket: `websocket_echo(port)`, a WebSocket upgrade on /socket.io/ through the gateway and one frame.

Imports only the standard library at import time (noxfile.py imports testkit.leftovers).
"""

from .checks import check, record
from .names import unique_name
from .require import in_ci, require
from .stacks import (
                     LOCAL_IMAGES,
                     ROOT,
                     STANDIN_IMAGES,
                     STANDIN_RELEASE,
                     env_init,
                     existing_volumes,
                     free_port,
                     free_ports,
                     invoke,
                     mounted_volumes,
                     owned,
                     remove_owned,
)
from .status import healthy, prod_status, row_of, swarm_status
from .streamed import Streamed
from .websocket import websocket_echo

__all__ = ["LOCAL_IMAGES", "ROOT", "STANDIN_IMAGES", "STANDIN_RELEASE", "check", "env_init", "existing_volumes", "free_port",
           "free_ports", "healthy", "in_ci", "invoke", "mounted_volumes", "owned", "prod_status", "record",
           "remove_owned", "require", "row_of", "Streamed", "swarm_status", "unique_name", "websocket_echo"]
