"""The .env as Docker Compose reads it (once, for every purpose), and one way to write it.

Which rules: compose-go's `dotenv` package (dotenv/parser.go, godotenv.go, env.go) and its
interpolation (template/template.go) at v2.4.8, the compose-go that Debian's docker-compose
2.26.1-4 is built with (its Static-Built-Using field; this is the Compose 2.26 of the project's
machines and CI), read from github.com/compose-spec/compose-go at tag v2.4.8 and rewritten here.
The parser is the same from compose-go v2.3.0 to v2.13 apart from the line numbers in its
errors (v2.2.x refused `-` in names, which this reader accepts as the others do).
Differences between versions that change what a file means, and what this package does:
- `${SET:-${UNSET:?msg}}`: compose-go before 2.10.1 interpolates defaults eagerly and refuses it
  (so Compose 2.26 and 2.40, on compose-go 2.9.x); 2.10.1 and later (Compose 5) accept it.
  Refused here, as by the older ones.
- Several `--env-file`: from compose-go 2.8.0 a file's `${KEY}` sees its own earlier KEY before
  a previous file's KEY; before, the other way round. A file where the two differ is refused.
- `env_file:`: from compose-go 2.5.0 names are looked up in the project environment, then in
  the service's `environment:`; before, in the service's earlier env files, then the project
  environment. The same for one env file that uses no `environment:` key, as here.

tests/unit/test_dotenv_compose.py holds the reader to the real `docker compose config`.

- reader: parse/read one file (values, the line and raw text of every key, one-line refusals).
- environments: the project environment (`${KEY}`) against what `env_file:` services get.
- template: Compose's `${...}` interpolation of one string.
- writer: set or append keys keeping the rest, quoted to read back exactly, atomic, mode 0600.
- strength: why a value is too weak to be a secret.
"""

from .environments import (
    ComposeEnv,
    disagreements,
    env_file_values,
    from_files,
    from_texts,
    load,
    project_environment,
)
from .reader import DotEnv, DotenvError, Entry, parse, read
from .strength import KNOWN_PUBLIC_DEFAULTS, weakness
from .writer import backup, quote, set_values, update, write_private

__all__ = [
    "KNOWN_PUBLIC_DEFAULTS", "ComposeEnv", "DotEnv", "DotenvError", "Entry", "backup", "disagreements",
    "env_file_values", "from_files", "from_texts", "load", "parse", "project_environment", "quote", "read",
    "set_values", "update", "weakness", "write_private",
]
