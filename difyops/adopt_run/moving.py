"""Moving the data: the target prepared, databases, files and Redis staged and verified, then placed."""

from __future__ import annotations

import shlex
import shutil
import time

from .. import adopt as ad
from .. import backup as bk
from .. import clusters as cl
from .. import composeps, digests, dotenv, images, pgmove, units
from .. import stack as st
from ..config import load_settings
from .commands import (
    LABEL,
    RunError,
    compare_digests,
    list_databases_sql,
    mbps,
    parse_digest,
    parse_tree,
    pg_source,
    plugin_packages,
    redis_source,
    redis_version_of_image,
    run,
    secret_key_problem,
    source_psql_argv,
    tool_argv,
)
from .official import Adoption, running_count, wait_source_db


def prepare_target(a: Adoption, mapped_text: str) -> None:
    """Write the mapped .env (the previous one kept), create networks and volumes, start the data cluster."""
    path = a.settings.env_file
    a.env_existed = path.is_file()
    if a.env_existed:
        a.env_backup = dotenv.backup(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dotenv.write_private(path, mapped_text)
    a.env_written = True
    fresh = load_settings(None, path)
    fresh.stack, fresh.wait_timeout = a.settings.stack, a.settings.wait_timeout  # from invoke configuration
    a.settings = fresh
    a.data_was_running = running_count(a.c, a.settings, cl.CLUSTERS["data"]) > 0
    every = list(cl.CLUSTERS.values())
    networks = sorted({n for x in every for n in x.networks})
    for network in networks:
        name = cl.network_name(a.settings, network)
        if not a.c.run(shlex.join(["docker", "network", "inspect", name]), hide=True, warn=True).ok:
            a.created_networks.append(name)
    from .. import ha  # noqa: PLC0415

    volumes = sorted({v for x in every for v in (*x.volumes, *ha.extra_volumes(a.settings.env, x.name))})
    for volume in volumes:
        name = cl.volume_name(a.settings, volume)
        if not a.c.run(shlex.join(["docker", "volume", "inspect", name]), hide=True, warn=True).ok:
            a.created_volumes.append(name)
    st.ensure_shared(a.c, a.settings, every)
    a.data_started = True
    st.up(a.c, a.settings, cl.CLUSTERS["data"])


def move_databases(a: Adoption) -> None:
    """Every database of the official PostgreSQL servers into a new database of the data cluster."""
    cfg = bk.config_from(a.settings)
    # The step container is on both networks, and both have a db_postgres: each server is addressed
    # by its container's name, which only its own network resolves.
    result = units.run_compose(a.c, a.settings, cl.CLUSTERS["data"], "ps", "--format", "json", hide=True, warn=True)
    _states, containers, _healths = composeps.by_service(composeps.records(result.stdout if result.ok else ""))
    target_host = containers.get("db_postgres") or cfg.db_write_host
    target = pgmove.Server(target_host, cfg.db_write_port, cfg.db_user, cfg.network, "DST_PGPASSWORD")
    if a.install.db_service is None:
        raise RunError("the official install has no PostgreSQL service (db_postgres or db)")
    servers = [a.install.db_service]
    if a.install.vector_store == "pgvector" and "pgvector" in a.install.services:
        servers.append(a.install.services["pgvector"])
    vector_name = ad.vector_database_name(a.install)
    taken: set[str] = set()
    for service in servers:
        source = pg_source(service)
        wait_source_db(a, source)
        names = run(a.c, source_psql_argv(a.image, source, list_databases_sql()),
                    f"listing the databases of {service.name}", {"PGPASSWORD": source.password}).split()
        for database in names:
            final = database
            if service.name == "pgvector":
                final = (vector_name or database) if database == (a.install.env.get("PGVECTOR_DATABASE") or "dify") else database
            if final in taken:
                final = f"{final}_{service.name}"
            taken.add(final)
            scratch = f"{final}_adopt_{a.stamp}"
            a.scratch[final] = scratch
            secrets = {"SRC_PGPASSWORD": source.password, "DST_PGPASSWORD": a.settings.get("DB_PASSWORD")}
            server = pgmove.Server(a.install.containers.get(service.name) or source.host, source.port, source.user,
                                   source.network, "SRC_PGPASSWORD")
            moved = pgmove.move(a.c, a.image, server, target, database, scratch, secrets,
                                name=f"{a.settings.stack}-adopt-{a.stamp}-{len(a.moved)}", labels={LABEL: "step"})
            moved.meta["server"] = service.name
            moved.meta["final"] = final
            a.moved.append(moved)
            a.say(f"  database {service.name}/{database} -> {final}: {len(moved.tables)} tables, {moved.rows} rows, "
                  f"{ad.human(moved.source_bytes)} in {moved.seconds:.1f}s ({mbps(moved.source_bytes, moved.seconds):.1f} "
                  "MB/s); every table's rows and content hash equal")
    problem = secret_key_problem(a.install.env.get("SECRET_KEY", ""), a.moved)
    if problem:
        raise RunError(problem)


def stage_files(a: Adoption) -> None:
    """Every folder into a staging folder inside its volume, every file's sha256 compared."""
    for part in a.plan.parts:
        if part.kind != "files":
            continue
        volume = cl.volume_name(a.settings, part.volume)
        started = time.monotonic()
        argv = tool_argv(a.image, None, [(str(part.source), "/src", True), (volume, "/target", False)], {}, (),
                         "bash", "/difyops/stage-tree.sh", "copy", "/src", "/target", a.stamp, *( [part.owner] if part.owner else []))
        a.staged.append(volume)
        tree = parse_tree(run(a.c, argv, f"copying {part.source} into {volume}"))
        seconds = time.monotonic() - started
        if not tree["source_digest"] or tree["source_digest"] != tree["copy_digest"]:
            raise RunError(f"{part.name}: the copy in {volume} differs from {part.source} (sha256 of every file "
                           "compared)")
        size = sum(s for _h, s in tree["files"].values())
        tree.update(seconds=seconds, bytes=size, volume=volume)
        a.trees[part.name] = tree
        extra = f", {plugin_packages(tree['files'])} plugin packages" if part.volume == "plugin-storage" else ""
        a.say(f"  {part.name}: {len(tree['files'])} files{extra}, {ad.human(size)} into {volume} in {seconds:.1f}s "
              f"({mbps(size, seconds):.1f} MB/s); every file's sha256 equal")


def snapshot_redis(a: Adoption) -> None:
    source = redis_source(a.install)
    a.stage.mkdir(parents=True, exist_ok=True)
    env = {"REDISCLI_AUTH": source.password}
    digest_argv = tool_argv(a.image, source.network, [], {}, ("REDISCLI_AUTH",), "bash", "/difyops/redis-digest.sh",
                            source.host, source.port, "0")
    dbs, version, cutoff = parse_digest(run(a.c, digest_argv, "digesting the official Redis", env))
    rdb_argv = tool_argv(a.image, source.network, [(str(a.stage), "/stage", False)], {}, ("REDISCLI_AUTH",),
                         "redis-cli", "-h", source.host, "-p", source.port, "--no-auth-warning", "--rdb",
                         "/stage/redis.rdb")
    run(a.c, rdb_argv, "snapshotting the official Redis", env)
    size = (a.stage / "redis.rdb").stat().st_size
    a.redis = {"source": dbs, "version": version, "cutoff": cutoff, "bytes": size}
    keys = sum(v[0] for v in dbs.values())
    a.say(f"  redis {version}: {keys} keys in {len(dbs)} databases ({ad.human(size)} snapshot)"
          + (f", {sum(v[1] for v in dbs.values())} expiring within 5 minutes not compared" if any(v[1] for v in dbs.values()) else ""))


def place_redis(a: Adoption) -> None:
    data = cl.CLUSTERS["data"]
    units.run_compose(a.c, a.settings, data, "stop", "--timeout", "30", "redis", hide=True, warn=True)
    target_ref = images.resolve_ref(images.find("redis"), a.settings.env).ref
    version = redis_version_of_image(a.c, target_ref) or (7,)
    volume = cl.volume_name(a.settings, "redisdata")
    argv = tool_argv(a.image, None, [(str(a.stage), "/stage", True), (volume, "/target", False)], {}, (),
                     "bash", "/difyops/redis-place.sh", "/stage/redis.rdb", "/target", a.stamp, str(version[0]))
    run(a.c, argv, f"putting the Redis snapshot into {volume}")
    st.up(a.c, a.settings, data)
    cfg = bk.config_from(a.settings)
    argv = tool_argv(a.image, cfg.network, [], {}, ("REDISCLI_AUTH",), "bash", "/difyops/redis-digest.sh",
                     cfg.redis_host, cfg.redis_port, a.redis.get("cutoff") or "0")
    dbs, version_text, _cutoff = parse_digest(run(a.c, argv, "digesting this stack's Redis",
                                                  {"REDISCLI_AUTH": a.settings.get("REDIS_PASSWORD")}))
    problems = compare_digests(a.redis["source"], dbs)
    if problems:
        raise RunError("; ".join(problems))
    a.redis["target_version"] = version_text
    a.say(f"  redis: snapshot in place, Redis {version_text} loaded it: every key's type and value equal")


def place_certificates(a: Adoption) -> list[str]:
    """Certificate files into NGINX_SSL_DIR (a file of the same name that differs is kept as .bak.<stamp>)."""
    part = next((p for p in a.plan.parts if p.kind == "certs"), None)
    if part is None or part.source is None:
        return []
    target = ad.ssl_dir(a.settings)
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(p for p in part.source.iterdir() if p.is_file()):
        dest = target / source.name
        digest = digests.file_sha256(source)
        if dest.exists() and digests.file_sha256(dest) != digest:
            shutil.copy2(dest, dest.with_name(f"{dest.name}.bak.{a.stamp}"))
        shutil.copy2(source, dest)
        if digests.file_sha256(dest) != digest:
            raise RunError(f"copying {source} to {dest}: the sha256 differs")
        copied.append(source.name)
    a.say(f"  certificates: {', '.join(copied)} into {target} (sha256 equal)")
    return copied
