"""What Compose makes of env files in its two uses, and where the two disagree.

- `--env-file F` (each one in order, compose-go cli.WithDotEnv): F's keys join the *project
  environment*, which is what `${KEY}` in a compose file means. The process environment wins over
  every file: a variable exported in the shell beats the same key in .env.
- `env_file: F` in a service (compose-go Project.WithServicesEnvironmentResolved): F is read
  again, its `${...}` and bare names now looked up in the project environment first, and the
  container gets F's own values (the process environment does not override them). A file can pass
  the first reading and fail this one (`B=x`, `A=${B:?}`, `B=` is fine top to bottom, but
  B is empty in the project environment), and Compose then refuses the project.

So one file can mean two things: a key the shell also exports, or a `${KEY}` used before KEY is
set again further down (project: the value above; env_file: the final one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .reader import DotEnv, DotenvError, parse, read


@dataclass(frozen=True)
class ComposeEnv:
    """The env files of one compose command, read both ways."""

    files: tuple[DotEnv, ...]  # the --env-file files in order; the last one is also the env_file:
    project: dict[str, str]  # `${KEY}` in a compose file (the whole process environment included)
    env_file: dict[str, str]  # what a service with `env_file: <last file>` gets from it

    @property
    def dotenv(self) -> DotEnv:
        return self.files[-1]


def project_environment(files: Sequence[DotEnv], environ: Mapping[str, str]) -> dict[str, str]:
    return {**_merged(files), **environ}


def env_file_values(dotenv: DotEnv, project: Mapping[str, str]) -> dict[str, str]:
    """The variables a service with `env_file: <this file>` gets from it (DotenvError when
    Compose refuses the file in that use)."""
    return dict(parse(dotenv.text, project, source=dotenv.source).values)


def from_files(files: Sequence[DotEnv], environ: Mapping[str, str]) -> ComposeEnv:
    """Both readings, from files already read with the same ``environ`` (see reader.read_all)."""
    if not files:
        raise DotenvError("env files", None, "none given")
    project = project_environment(files, environ)
    return ComposeEnv(tuple(files), project, env_file_values(files[-1], project))


def load(paths: Sequence[Path], environ: Mapping[str, str]) -> ComposeEnv:
    """`--env-file P1 --env-file P2 ...`, the last also being the services' `env_file:`.

    ``environ`` is the process environment Compose will run with: pass it explicitly."""
    files: list[DotEnv] = []
    for path in paths:
        files.append(read(path, environ, earlier=_merged(files)))
    return from_files(files, environ)


def from_texts(texts: Sequence[bytes | str], environ: Mapping[str, str],
               sources: Sequence[str] | None = None) -> ComposeEnv:
    """As load(), from the files' contents (``sources`` name them in messages)."""
    names = list(sources) if sources is not None else [f"env file {i + 1}" for i in range(len(texts))]
    files: list[DotEnv] = []
    for text, name in zip(texts, names, strict=True):
        files.append(parse(text, environ, source=name, earlier=_merged(files)))
    return from_files(files, environ)


def _merged(files: Sequence[DotEnv]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for dotenv in files:
        merged.update(dotenv.values)
    return merged


def disagreements(env: ComposeEnv, environ: Mapping[str, str]) -> list[str]:
    """One line per key of the last file whose `${KEY}` in a compose file differs from what
    `env_file:` gives a container, naming the line and the cause (never the values)."""
    dotenv = env.dotenv
    problems = []
    for key, value in dotenv.values.items():
        if env.env_file.get(key) == env.project.get(key):
            continue
        where = f"{dotenv.source}, line {dotenv.line(key)}: {key}"
        if key in environ:
            problems.append(f"{where}: the process environment sets {key} too, so ${{{key}}} in a compose"
                            " file takes the environment's value while env_file: services get the file's")
        elif env.env_file.get(key) != value:
            problems.append(f"{where}: uses a variable that is set again further down, so ${{{key}}} in a"
                            " compose file and env_file: services get different values: set it once")
    return problems
