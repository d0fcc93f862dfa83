"""Text for a command's standard input, given through invoke's ``c.run(..., in_stream=...)``.

invoke copies ``in_stream`` into the process one ``read(1)`` at a time with a 10 ms pause
between reads whenever the stream is not a terminal (``invoke.terminals.bytes_to_read``):
a 20 KB stack file took more than three minutes to reach ``docker stack deploy -c -``.
:class:`TextInput` answers each read with up to 64 KB, so the same file goes in one read.
"""

from __future__ import annotations

import io

CHUNK = 64 * 1024


class TextInput(io.StringIO):
    """A StringIO whose reads return up to CHUNK characters, whatever size invoke asks for."""

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            return super().read()
        return super().read(max(size, CHUNK))
