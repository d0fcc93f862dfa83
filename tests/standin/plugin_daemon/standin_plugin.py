# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The stand-in's one "plugin": what a plugin process sees. The stand-in daemon copies this file into
# the plugin's working folder and starts it as dify-plugin-daemon 0.5.3 starts a Python plugin
# (`python -m <entrypoint>` in that folder, with the daemon's own environment). It prints one JSON
# line on stdout (the daemon reads plugins' stdout): the names of its environment variables and a
# sha256 of each value (never a value itself), then waits for stdin to close, as a plugin does.
import hashlib
import json
import os
import sys

# The Python plugin SDK of the 0.6 line "self-destructs (os._exit(-1), exit 255) when its parent
# process is PID 1" (dify-plugin-daemon docker/local.dockerfile at 0.6.3): the stand-in daemon of
# that line leaves this marker beside the plugin.
if os.path.exists("SDK_EXITS_UNDER_PID_1") and os.getppid() == 1:
    sys.stderr.write("plugin: parent process is PID 1 (orphaned): exiting\n")
    os._exit(255)

report = {
    "plugin": "standin-plugin",
    "pid": os.getpid(),
    "cwd": os.getcwd(),
    "names": sorted(os.environ),
    "sha256": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in sorted(os.environ.items())},
}
sys.stdout.write(json.dumps(report) + "\n")
sys.stdout.flush()
for _ in sys.stdin:  # until the daemon closes our stdin
    pass
