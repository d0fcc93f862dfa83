"""Scheduled backups: the cron entry, and the success metric for node_exporter."""

from __future__ import annotations

import os
import shlex
import time
from datetime import datetime
from pathlib import Path

from croniter import croniter

from .. import paths
from .config import BackupConfig, BackupError


def textfile_metric(stack: str, when: float) -> str:
    return ("# HELP difyops_backup_last_success_timestamp_seconds Unix time of the last backup that completed.\n"
            "# TYPE difyops_backup_last_success_timestamp_seconds gauge\n"
            f'difyops_backup_last_success_timestamp_seconds{{stack="{stack}",kind="full"}} {when:.0f}\n')


def write_textfile(cfg: BackupConfig, when: float) -> Path:
    """The metric node_exporter's textfile collector reads, written atomically (a rename)."""
    cfg.textfile_dir.mkdir(parents=True, exist_ok=True)
    target = cfg.textfile_dir / f"difyops_backup_{cfg.stack}.prom"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(textfile_metric(cfg.stack, when))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def next_run(cfg: BackupConfig, after: float | None = None) -> float:
    """When cron next starts the scheduled backup (UNIX time, local time zone as cron's). A
    BackupError for DIFYOPS_BACKUP_SCHEDULE that is not a 5-field cron time cron accepts."""
    text = " ".join(cfg.schedule.split())
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise BackupError(f"DIFYOPS_BACKUP_SCHEDULE={cfg.schedule!r} is not a 5-field cron time such as '17 3 * * *'")
    start = datetime.fromtimestamp(time.time() if after is None else after).astimezone()
    return float(croniter(text, start).get_next(float))


def cron_entry(cfg: BackupConfig, repo: Path = paths.ROOT, log: str = "/var/log/difyops-backup.log") -> str:
    """An /etc/cron.d file: create (and copy off the host when configured), then prune, daily."""
    next_run(cfg)  # refuses what cron would not run
    command = (f"cd {shlex.quote(str(repo))} && export INVOKE_DIFYOPS_ENV_FILE={shlex.quote(str(cfg.env_file))} "
               f"&& (scripts/backup.sh create && scripts/backup.sh prune) >> {log} 2>&1")
    return ("# difyops: scheduled backup of stack " + cfg.stack + " (written by `invoke backup.schedule`)\n"
            "SHELL=/bin/bash\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"{cfg.schedule} root {command}\n")
