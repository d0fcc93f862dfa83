"""An install of Dify's official docker/ bundle, built for the adopt tests and the adopt benchmark.

docker-compose.yaml has the shape of Dify 1.13.3's (docker/docker-compose-template.yaml at
0055b983, summarised in the project's reference notes): the official service names, the official
images (langgenius/dify-api:1.13.3, postgres:15-alpine, redis:6-alpine, pgvector/pgvector:pg16,
...), the shared environment anchor, the bind mounts under ./volumes/, the profiles. What cannot
be had here is swapped in by docker-compose.override.yaml, as a user's own override would be: the
Dify stand-in (a TEST DOUBLE), PostgreSQL 15 built from Debian 12 (difyops-local/postgres:15),
PostgreSQL 17 with pgvector for the pgvector service (the official pg16 image cannot be pulled),
local Redis and nginx, and the gateway published on 127.0.0.1 only. The folder's name is the
compose project's, as with the official bundle (`docker compose up` in docker/).

Data is written through the stand-in's api (messages, uploads, Celery tasks, tenant key pairs) and,
for the tables the stand-in has no route for, straight into PostgreSQL in Dify's own table names.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testkit (benchmarks/adopt.py imports this too)
from testkit import free_port  # noqa: E402

# How much data the adopt tests write into the install (rows, files, keys), in MB.
SEED_MB = int(os.environ.get("DIFYOPS_ADOPT_SEED_MB", "48"))

PUBLIC = {  # Dify's docker/.env.example values (public strings)
    "DB_PASSWORD": "difyai123456",
    "REDIS_PASSWORD": "difyai123456",
    "SANDBOX_API_KEY": "dify-sandbox",
    "PLUGIN_DAEMON_KEY": "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
    "PLUGIN_DIFY_INNER_API_KEY": "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
    "WEAVIATE_API_KEY": "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih",
}

COMPOSE = """\
# Shape of Dify 1.13.3's docker/docker-compose.yaml (services, images, anchor, mounts, profiles),
# written by tests/adopt/official.py. Images that cannot be had here: docker-compose.override.yaml.
x-shared-env: &shared-api-worker-env
  CONSOLE_API_URL: ${CONSOLE_API_URL:-}
  APP_API_URL: ${APP_API_URL:-}
  FILES_URL: ${FILES_URL:-}
  LOG_LEVEL: ${LOG_LEVEL:-INFO}
  SECRET_KEY: ${SECRET_KEY:-sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U}
  MIGRATION_ENABLED: ${MIGRATION_ENABLED:-true}
  FILES_ACCESS_TIMEOUT: ${FILES_ACCESS_TIMEOUT:-300}
  APP_MAX_EXECUTION_TIME: ${APP_MAX_EXECUTION_TIME:-1200}
  DB_TYPE: ${DB_TYPE:-postgresql}
  DB_USERNAME: ${DB_USERNAME:-postgres}
  DB_PASSWORD: ${DB_PASSWORD:-difyai123456}
  DB_HOST: ${DB_HOST:-db_postgres}
  DB_PORT: ${DB_PORT:-5432}
  DB_DATABASE: ${DB_DATABASE:-dify}
  REDIS_HOST: ${REDIS_HOST:-redis}
  REDIS_PORT: ${REDIS_PORT:-6379}
  REDIS_PASSWORD: ${REDIS_PASSWORD:-difyai123456}
  REDIS_DB: ${REDIS_DB:-0}
  CELERY_BROKER_URL: ${CELERY_BROKER_URL:-redis://:difyai123456@redis:6379/1}
  CELERY_BACKEND: ${CELERY_BACKEND:-redis}
  STORAGE_TYPE: ${STORAGE_TYPE:-opendal}
  OPENDAL_SCHEME: ${OPENDAL_SCHEME:-fs}
  OPENDAL_FS_ROOT: ${OPENDAL_FS_ROOT:-storage}
  VECTOR_STORE: ${VECTOR_STORE:-weaviate}
  PGVECTOR_HOST: ${PGVECTOR_HOST:-pgvector}
  PGVECTOR_PORT: ${PGVECTOR_PORT:-5432}
  PGVECTOR_USER: ${PGVECTOR_USER:-postgres}
  PGVECTOR_PASSWORD: ${PGVECTOR_PASSWORD:-difyai123456}
  PGVECTOR_DATABASE: ${PGVECTOR_DATABASE:-dify}
  UPLOAD_FILE_SIZE_LIMIT: ${UPLOAD_FILE_SIZE_LIMIT:-15}
  CODE_EXECUTION_ENDPOINT: ${CODE_EXECUTION_ENDPOINT:-http://sandbox:8194}
  CODE_EXECUTION_API_KEY: ${CODE_EXECUTION_API_KEY:-dify-sandbox}
  PLUGIN_DAEMON_URL: ${PLUGIN_DAEMON_URL:-http://plugin_daemon:5002}
  PLUGIN_DAEMON_KEY: ${PLUGIN_DAEMON_KEY:-lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi}
  DB_PLUGIN_DATABASE: ${DB_PLUGIN_DATABASE:-dify_plugin}

services:
  init_permissions:
    image: busybox:latest
    command:
      - sh
      - -c
      - |
        FLAG_FILE="/app/api/storage/.init_permissions"
        if [ -f "$${FLAG_FILE}" ]; then
          echo "Permissions already initialized. Exiting."
          exit 0
        fi
        chown -R 1001:1001 /app/api/storage && touch "$${FLAG_FILE}"
    volumes:
      - ./volumes/app/storage:/app/api/storage
    restart: "no"

  api:
    image: langgenius/dify-api:1.13.3
    restart: always
    environment:
      <<: *shared-api-worker-env
      MODE: api
      INNER_API_KEY_FOR_PLUGIN: ${PLUGIN_DIFY_INNER_API_KEY:-QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1}
    depends_on:
      init_permissions:
        condition: service_completed_successfully
      db_postgres:
        condition: service_healthy
        required: false
      redis:
        condition: service_started
    volumes:
      - ./volumes/app/storage:/app/api/storage
    networks:
      - ssrf_proxy_network
      - default
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:5001/health"]
      interval: 5s
      timeout: 5s
      retries: 30

  worker:
    image: langgenius/dify-api:1.13.3
    restart: always
    environment:
      <<: *shared-api-worker-env
      MODE: worker
    depends_on:
      init_permissions:
        condition: service_completed_successfully
      db_postgres:
        condition: service_healthy
        required: false
      redis:
        condition: service_started
    volumes:
      - ./volumes/app/storage:/app/api/storage
    networks:
      - ssrf_proxy_network
      - default

  worker_beat:
    image: langgenius/dify-api:1.13.3
    restart: always
    environment:
      <<: *shared-api-worker-env
      MODE: beat
      STANDIN_BEAT_INTERVAL: "3"
    depends_on:
      db_postgres:
        condition: service_healthy
        required: false
      redis:
        condition: service_started
    networks:
      - ssrf_proxy_network
      - default

  web:
    image: langgenius/dify-web:1.13.3
    restart: always
    environment:
      CONSOLE_API_URL: ${CONSOLE_API_URL:-}
      APP_API_URL: ${APP_API_URL:-}

  db_postgres:
    image: postgres:15-alpine
    profiles:
      - postgresql
    restart: always
    environment:
      POSTGRES_USER: ${DB_USERNAME:-postgres}
      POSTGRES_PASSWORD: ${DB_PASSWORD:-difyai123456}
      POSTGRES_DB: ${DB_DATABASE:-dify}
      PGDATA: ${PGDATA:-/var/lib/postgresql/data/pgdata}
    command: >
      postgres -c 'max_connections=${POSTGRES_MAX_CONNECTIONS:-100}'
               -c 'shared_buffers=${POSTGRES_SHARED_BUFFERS:-128MB}'
               -c 'work_mem=${POSTGRES_WORK_MEM:-4MB}'
               -c 'maintenance_work_mem=${POSTGRES_MAINTENANCE_WORK_MEM:-64MB}'
               -c 'effective_cache_size=${POSTGRES_EFFECTIVE_CACHE_SIZE:-4096MB}'
               -c 'statement_timeout=${POSTGRES_STATEMENT_TIMEOUT:-0}'
               -c 'idle_in_transaction_session_timeout=${POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT:-0}'
    volumes:
      - ./volumes/db/data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "db_postgres", "-U", "${DB_USERNAME:-postgres}", "-d", "${DB_DATABASE:-dify}"]
      interval: 1s
      timeout: 3s
      retries: 60

  redis:
    image: redis:6-alpine
    restart: always
    environment:
      REDISCLI_AUTH: ${REDIS_PASSWORD:-difyai123456}
    volumes:
      - ./volumes/redis/data:/data
    command: redis-server --requirepass ${REDIS_PASSWORD:-difyai123456}
    healthcheck:
      test: ["CMD-SHELL", "redis-cli -a ${REDIS_PASSWORD:-difyai123456} ping | grep -q PONG"]

  sandbox:
    image: langgenius/dify-sandbox:0.2.14
    restart: always
    environment:
      API_KEY: ${SANDBOX_API_KEY:-dify-sandbox}
      GIN_MODE: ${SANDBOX_GIN_MODE:-release}
      SANDBOX_PORT: ${SANDBOX_PORT:-8194}
    volumes:
      - ./volumes/sandbox/dependencies:/dependencies
      - ./volumes/sandbox/conf:/conf
    networks:
      - ssrf_proxy_network

  plugin_daemon:
    image: langgenius/dify-plugin-daemon:0.5.3-local
    restart: always
    environment:
      <<: *shared-api-worker-env
      DB_DATABASE: ${DB_PLUGIN_DATABASE:-dify_plugin}
      SERVER_PORT: ${PLUGIN_DAEMON_PORT:-5002}
      SERVER_KEY: ${PLUGIN_DAEMON_KEY:-lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi}
      DIFY_INNER_API_URL: ${PLUGIN_DIFY_INNER_API_URL:-http://api:5001}
      DIFY_INNER_API_KEY: ${PLUGIN_DIFY_INNER_API_KEY:-QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1}
      # As the official template sets them from docker/.env.example (0.5.3 refuses to start without them).
      PLUGIN_REMOTE_INSTALLING_HOST: ${PLUGIN_DEBUGGING_HOST:-0.0.0.0}
      PLUGIN_REMOTE_INSTALLING_PORT: ${PLUGIN_DEBUGGING_PORT:-5003}
      PLUGIN_WORKING_PATH: ${PLUGIN_WORKING_PATH:-/app/storage/cwd}
      PLUGIN_INSTALLED_PATH: ${PLUGIN_INSTALLED_PATH:-plugin}
      PLUGIN_PACKAGE_CACHE_PATH: ${PLUGIN_PACKAGE_CACHE_PATH:-plugin_packages}
      PLUGIN_MEDIA_CACHE_PATH: ${PLUGIN_MEDIA_CACHE_PATH:-assets}
      PLUGIN_STORAGE_TYPE: ${PLUGIN_STORAGE_TYPE:-local}
      PLUGIN_STORAGE_LOCAL_ROOT: ${PLUGIN_STORAGE_LOCAL_ROOT:-/app/storage}
    depends_on:
      db_postgres:
        condition: service_healthy
        required: false
    volumes:
      - ./volumes/plugin_daemon:/app/storage

  certbot:
    image: certbot/certbot
    profiles:
      - certbot
    volumes:
      - ./volumes/certbot/conf:/etc/letsencrypt
      - ./volumes/certbot/www:/var/www/html

  nginx:
    image: nginx:latest
    restart: always
    volumes:
      - ./nginx/conf.d:/etc/nginx/conf.d
      - ./nginx/ssl:/etc/ssl
      - ./volumes/certbot/conf/live:/etc/letsencrypt/live
      - ./volumes/certbot/conf:/etc/letsencrypt
      - ./volumes/certbot/www:/var/www/html
    depends_on:
      - api
      - web
    ports:
      - "${EXPOSE_NGINX_PORT:-80}:${NGINX_PORT:-80}"
      - "${EXPOSE_NGINX_SSL_PORT:-443}:${NGINX_SSL_PORT:-443}"

  pgvector:
    image: pgvector/pgvector:pg16
    profiles:
      - pgvector
    restart: always
    environment:
      PGUSER: ${PGVECTOR_PGUSER:-postgres}
      POSTGRES_PASSWORD: ${PGVECTOR_POSTGRES_PASSWORD:-difyai123456}
      POSTGRES_DB: ${PGVECTOR_POSTGRES_DB:-dify}
      PGDATA: ${PGVECTOR_PGDATA:-/var/lib/postgresql/data/pgdata}
    volumes:
      - ./volumes/pgvector/data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD", "pg_isready"]
      interval: 1s
      timeout: 3s
      retries: 30

networks:
  ssrf_proxy_network:
    driver: bridge
    internal: true
"""

OVERRIDE = """\
# Written by tests/adopt/official.py: what this machine has instead of the official images (a user's
# override does the same with mirrors). TEST DOUBLES for Dify's own images.
services:
  init_permissions: {image: difyops/debian:trixie-2}
  api: {image: difyops-standin/dify-api:v1}
  worker: {image: difyops-standin/dify-api:v1}
  worker_beat: {image: difyops-standin/dify-api:v1}
  web: {image: difyops-standin/dify-web:v1}
  sandbox: {image: difyops-standin/dify-sandbox:v1}
  plugin_daemon: {image: difyops-standin/dify-plugin-daemon:v1}
  db_postgres: {image: difyops-local/postgres:15}
  pgvector: {image: difyops-local/postgres:17}
  redis: {image: difyops-local/redis:8}
  nginx:
    image: difyops-local/nginx:1.26
    ports: !override
      - "127.0.0.1:${EXPOSE_NGINX_PORT}:80"
"""

NGINX_CONF = """\
# The official gateway's routes (docker/nginx/conf.d/default.conf.template), without templating.
server {
    listen 80;
    client_max_body_size 100M;
    location /console/api { proxy_pass http://api:5001; }
    location /api { proxy_pass http://api:5001; }
    location /v1 { proxy_pass http://api:5001; }
    location /files { proxy_pass http://api:5001; }
    location /e/ { proxy_pass http://plugin_daemon:5002; }
    location / { proxy_pass http://web:3000; }
}
"""


def sh(*argv: str, check: bool = True, timeout: int = 600, env: dict | None = None,
       input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:8])} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def official_env(port: int, secret_key: str) -> str:
    values = {
        "CONSOLE_API_URL": "", "APP_API_URL": "", "FILES_URL": "", "LOG_LEVEL": "INFO",
        "SECRET_KEY": secret_key, "MIGRATION_ENABLED": "true", "FILES_ACCESS_TIMEOUT": "300",
        "APP_MAX_EXECUTION_TIME": "1200", "DB_TYPE": "postgresql", "DB_USERNAME": "postgres",
        "DB_PASSWORD": PUBLIC["DB_PASSWORD"], "DB_HOST": "db_postgres", "DB_PORT": "5432", "DB_DATABASE": "dify",
        "PGDATA": "/var/lib/postgresql/data/pgdata", "POSTGRES_MAX_CONNECTIONS": "120",
        "REDIS_HOST": "redis", "REDIS_PORT": "6379", "REDIS_PASSWORD": PUBLIC["REDIS_PASSWORD"], "REDIS_DB": "0",
        "CELERY_BROKER_URL": f"redis://:{PUBLIC['REDIS_PASSWORD']}@redis:6379/1", "CELERY_BACKEND": "redis",
        "STORAGE_TYPE": "opendal", "OPENDAL_SCHEME": "fs", "OPENDAL_FS_ROOT": "storage",
        "VECTOR_STORE": "pgvector", "PGVECTOR_HOST": "pgvector", "PGVECTOR_PORT": "5432", "PGVECTOR_USER": "postgres",
        "PGVECTOR_PASSWORD": PUBLIC["DB_PASSWORD"], "PGVECTOR_DATABASE": "dify", "PGVECTOR_PGUSER": "postgres",
        "PGVECTOR_POSTGRES_PASSWORD": PUBLIC["DB_PASSWORD"], "PGVECTOR_POSTGRES_DB": "dify",
        "PGVECTOR_PGDATA": "/var/lib/postgresql/data/pgdata",
        "WEAVIATE_ENDPOINT": "http://weaviate:8080", "WEAVIATE_API_KEY": PUBLIC["WEAVIATE_API_KEY"],
        "WEAVIATE_CLUSTER_HOSTNAME": "node1",
        "UPLOAD_FILE_SIZE_LIMIT": "15", "NGINX_CLIENT_MAX_BODY_SIZE": "100M",
        "CODE_EXECUTION_ENDPOINT": "http://sandbox:8194", "CODE_EXECUTION_API_KEY": PUBLIC["SANDBOX_API_KEY"],
        "SANDBOX_API_KEY": PUBLIC["SANDBOX_API_KEY"], "SANDBOX_GIN_MODE": "release", "SANDBOX_PORT": "8194",
        "PLUGIN_DAEMON_PORT": "5002", "PLUGIN_DAEMON_KEY": PUBLIC["PLUGIN_DAEMON_KEY"],
        "PLUGIN_DAEMON_URL": "http://plugin_daemon:5002",
        "PLUGIN_DIFY_INNER_API_KEY": PUBLIC["PLUGIN_DIFY_INNER_API_KEY"],
        "PLUGIN_DIFY_INNER_API_URL": "http://api:5001", "DB_PLUGIN_DATABASE": "dify_plugin",
        "PLUGIN_STORAGE_TYPE": "local", "PLUGIN_STORAGE_LOCAL_ROOT": "/app/storage",
        "EXPOSE_PLUGIN_DEBUGGING_HOST": "localhost", "EXPOSE_PLUGIN_DEBUGGING_PORT": "5003",
        "NGINX_SERVER_NAME": "_", "NGINX_HTTPS_ENABLED": "false", "NGINX_PORT": "80", "NGINX_SSL_PORT": "443",
        "NGINX_SSL_CERT_FILENAME": "dify.crt", "NGINX_SSL_CERT_KEY_FILENAME": "dify.key",
        "NGINX_ENABLE_CERTBOT_CHALLENGE": "false", "EXPOSE_NGINX_PORT": str(port), "EXPOSE_NGINX_SSL_PORT": "443",
        "COMPOSE_PROFILES": "pgvector,postgresql",
    }
    return "# Dify's docker/.env (the test's copy of its example, with a few choices of the user's)\n" + \
        "".join(f"{k}={v}\n" for k, v in values.items())


@dataclass
class Official:
    """A running official-layout install and what was written into it."""

    dir: Path
    port: int
    secret_key: str
    messages: dict[int, str] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)  # file id -> sha256
    tasks: list[str] = field(default_factory=list)
    tenants: dict[str, dict] = field(default_factory=dict)  # tenant id -> {public_key, token, text}

    @property
    def project(self) -> str:
        return self.dir.name

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        return sh("docker", "compose", "--project-directory", str(self.dir), *args, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def psql(self, sql: str, db: str = "dify", service: str = "db_postgres") -> list[str]:
        out = sh("docker", "exec", "-e", "PGTZ=UTC", self.container(service), "psql", "-X", "-q", "-U", "postgres",
                 "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).stdout
        return [line for line in out.splitlines() if line]

    def redis(self, *args: str) -> str:
        return sh("docker", "exec", self.container("redis"), "redis-cli", "--no-auth-warning", "-a",
                  PUBLIC["REDIS_PASSWORD"], *args).stdout

    def up(self, timeout: int = 300) -> None:
        self.compose("up", "-d", "--wait", "--wait-timeout", str(timeout), timeout=timeout + 60)


def create(parent: Path, name: str) -> Official:
    """Write the install's files (nothing runs yet)."""
    folder = parent / name
    for sub in ("volumes/app/storage", "volumes/db/data", "volumes/redis/data", "volumes/plugin_daemon",
                "volumes/sandbox/dependencies", "volumes/sandbox/conf", "volumes/pgvector/data",
                "volumes/certbot/conf/live", "volumes/certbot/www", "nginx/conf.d", "nginx/ssl"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    official = Official(folder, port, secrets.token_urlsafe(42))
    (folder / "docker-compose.yaml").write_text(COMPOSE)
    (folder / "docker-compose.override.yaml").write_text(OVERRIDE)
    (folder / ".env").write_text(official_env(port, official.secret_key))
    (folder / "nginx/conf.d/default.conf").write_text(NGINX_CONF)
    (folder / "volumes/sandbox/dependencies/python-requirements.txt").write_text("numpy==1.26.4\npandas==2.2.2\n")
    (folder / "volumes/sandbox/conf/config.yaml").write_text("app:\n  port: 8194\n  debug: False\n")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=dify.example.com",
       "-keyout", str(folder / "nginx/ssl/dify.key"), "-out", str(folder / "nginx/ssl/dify.crt"))
    # certbot's layout: live/ holds symlinks into archive/
    archive = folder / "volumes/certbot/conf/archive/dify.example.com"
    archive.mkdir(parents=True)
    live = folder / "volumes/certbot/conf/live/dify.example.com"
    live.mkdir(parents=True)
    for name_ in ("fullchain", "privkey"):
        (archive / f"{name_}1.pem").write_bytes((folder / "nginx/ssl/dify.crt").read_bytes())
        (live / f"{name_}.pem").symlink_to(f"../../archive/dify.example.com/{name_}1.pem")
    (folder / "volumes/certbot/www/.well-known").mkdir(parents=True)
    (folder / "volumes/certbot/www/.well-known/probe").write_text("certbot webroot\n")
    return official


def wait_for(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(1)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f}s ({last})")


SEED_SQL = """
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL, encrypt_public_key text,
                      plan varchar(255) DEFAULT 'basic', status varchar(255) DEFAULT 'normal',
                      created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP(0));
CREATE TABLE providers (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), tenant_id uuid NOT NULL,
                        provider_name text NOT NULL, encrypted_config text, is_valid boolean DEFAULT false);
CREATE TABLE accounts (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), name text, email text UNIQUE,
                       password text, interface_language text, last_login_ip inet, created_at timestamptz DEFAULT now());
CREATE TABLE apps (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), tenant_id uuid, name text, mode text,
                   app_model_config jsonb, enable_site boolean, api_rpm integer, created_at timestamptz DEFAULT now());
CREATE TABLE conversations (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), app_id uuid, name text,
                            inputs json, dialogue_count integer, created_at timestamp DEFAULT now());
CREATE TABLE workflow_runs (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), sequence_number serial, graph text,
                            inputs text, outputs text, elapsed_time double precision, total_tokens bigint,
                            total_price numeric(10, 7), created_at timestamptz DEFAULT now());
CREATE TABLE datasets (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), tenant_id uuid, name text,
                       indexing_technique text, index_struct text, keywords text[]);
CREATE TABLE document_segments (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), dataset_id uuid, position integer,
                                content text, word_count integer, hit_count integer, indexing_at interval);
CREATE TABLE embeddings (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), model_name text, hash text,
                         embedding bytea, provider_name text, created_at timestamp DEFAULT now());
CREATE TABLE tool_oauth_system_clients (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), plugin_id text,
                                        provider text, encrypted_oauth_params text);
CREATE TABLE "Mixed Case Table" ("Weird Col" text, n smallint);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id bigserial PRIMARY KEY, kind text, payload jsonb, at timestamptz DEFAULT now());
INSERT INTO accounts (name, email, password, interface_language, last_login_ip)
  SELECT 'user ' || g, 'user' || g || '@example.com', md5(g::text), 'zh-Hans', ('10.0.' || (g % 255) || '.1')::inet
    FROM generate_series(1, 500) g;
INSERT INTO apps (tenant_id, name, mode, app_model_config, enable_site, api_rpm)
  SELECT uuid_generate_v4(), '应用 ' || g, (ARRAY['chat', 'workflow', 'agent-chat'])[1 + g % 3],
         jsonb_build_object('model', 'gpt-4o', 'temperature', g / 100.0, 'tools', jsonb_build_array(g, 'x')), g % 2 = 0, g
    FROM generate_series(1, 300) g;
INSERT INTO conversations (app_id, name, inputs, dialogue_count)
  SELECT uuid_generate_v4(), 'conversation ' || g, json_build_object('q', repeat('é', g % 20)), g FROM generate_series(1, 3000) g;
INSERT INTO datasets (tenant_id, name, indexing_technique, index_struct, keywords)
  SELECT uuid_generate_v4(), 'kb ' || g, 'high_quality', '{"type": "pgvector"}', ARRAY['a' || g, 'b'] FROM generate_series(1, 40) g;
INSERT INTO document_segments (dataset_id, position, content, word_count, hit_count, indexing_at)
  SELECT uuid_generate_v4(), g, repeat('segment text ' || g || ' ', 20), 60, g % 7, (g || ' seconds')::interval
    FROM generate_series(1, 20000) g;
INSERT INTO embeddings (model_name, hash, embedding, provider_name)
  SELECT 'text-embedding-3-small', md5(g::text), decode(repeat(md5(g::text), 16), 'hex'), 'openai'
    FROM generate_series(1, 20000) g;
INSERT INTO "Mixed Case Table" VALUES ('α', 1), ('β', 2), (NULL, NULL);
INSERT INTO audit.events (kind, payload) SELECT 'login', jsonb_build_object('n', g) FROM generate_series(1, 2000) g;
"""


def bulk_sql(megabytes: int) -> str:
    """Workflow runs of ~2 KB each (graphs and outputs do not compress much), to a size in MB."""
    rows = max(1, megabytes * 1024 * 1024 // 2200)
    return ("INSERT INTO workflow_runs (graph, inputs, outputs, elapsed_time, total_tokens, total_price) "
            "SELECT repeat(md5(g::text) || md5((g * 3)::text), 20), '{\"q\": \"' || md5(g::text) || '\"}', "
            "repeat(md5((g * 7)::text), 8), g / 1000.0, g * 13, (g % 1000) / 1000.0 "
            f"FROM generate_series(1, {rows}) g;")


VECTOR_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE embedding_vector_index_5f0d_node (id uuid PRIMARY KEY, text text NOT NULL, meta jsonb NOT NULL,
                                               embedding vector(8) NOT NULL);
CREATE INDEX embedding_vector_index_5f0d_node_idx ON embedding_vector_index_5f0d_node
  USING hnsw (embedding vector_cosine_ops);
INSERT INTO embedding_vector_index_5f0d_node
  SELECT md5(g::text)::uuid, 'chunk ' || g, jsonb_build_object('doc_id', g, 'dataset_id', 'kb'),
         ARRAY[g, g / 3.0, sin(g), cos(g), 0.5, -g / 7.0, 1e-3 * g, 42]::real[]::vector
    FROM generate_series(1, 3000) g;
"""

PLUGIN_SQL = """
CREATE TABLE plugins (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), plugin_unique_identifier text, plugin_id text,
                      refers bigint, install_type text, manifest_type text, declaration jsonb);
CREATE TABLE plugin_installations (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id uuid, plugin_id text,
                                   plugin_unique_identifier text, runtime_type text, meta jsonb);
INSERT INTO plugins (plugin_unique_identifier, plugin_id, refers, install_type, manifest_type, declaration)
  VALUES ('langgenius/openai:0.0.26@3c4e', 'langgenius/openai', 1, 'marketplace', 'plugin', '{"version": "0.0.26"}'),
         ('langgenius/ollama:0.0.6@9a1b', 'langgenius/ollama', 1, 'marketplace', 'plugin', '{"version": "0.0.6"}');
INSERT INTO plugin_installations (tenant_id, plugin_id, plugin_unique_identifier, runtime_type, meta)
  SELECT gen_random_uuid(), plugin_id, plugin_unique_identifier, 'local', '{}' FROM plugins;
"""


def seed(official: Official, megabytes: int = 40) -> None:
    """Real data through the stand-in's api, the rest in Dify's own table names, files, Redis keys."""
    base = official.base + "/console/api"
    for i in range(40):
        body = f"message {i}: " + "日本語 " * (i % 5) + secrets.token_hex(8)
        response = requests.post(f"{base}/messages", json={"body": body}, timeout=10)
        assert response.status_code == 201, response.text
        official.messages[response.json()["id"]] = body
    for i in range(12):
        data = os.urandom(1024 * (1 + i * 60))
        response = requests.post(f"{base}/files/upload", files={"file": (f"doc{i}.bin", data)}, timeout=30)
        assert response.status_code == 201, response.text
        official.uploads[response.json()["id"]] = hashlib.sha256(data).hexdigest()
    for i in range(6):
        response = requests.post(f"{base}/tasks", json={"input": f"task {i}", "rounds": 3}, timeout=10)
        assert response.status_code == 202, response.text
        official.tasks.append(response.json()["task_id"])
    official.psql(SEED_SQL + bulk_sql(megabytes))
    for i in range(2):
        tenant = str(uuid.uuid4())
        response = requests.post(f"{base}/standin/tenants/{tenant}/key-pair", timeout=30)
        assert response.status_code == 201, response.text
        public_key = response.json()["public_key"]
        text = f"sk-provider-credential-{i}-{secrets.token_hex(6)}"
        response = requests.post(f"{base}/standin/tenants/{tenant}/encrypt",
                                 json={"public_key": public_key, "text": text}, timeout=30)
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        official.tenants[tenant] = {"public_key": public_key, "token": token, "text": text}
        pk = public_key.replace("'", "''")
        official.psql(f"INSERT INTO tenants (id, name, encrypt_public_key) VALUES ('{tenant}', 'workspace {i}', '{pk}'); "
                      f"INSERT INTO providers (tenant_id, provider_name, encrypted_config, is_valid) VALUES "
                      f"('{tenant}', 'openai', '{json.dumps({'openai_api_key': token})}', true)")
    official.psql(VECTOR_SQL, db="dify", service="pgvector")
    official.psql(PLUGIN_SQL, db="dify_plugin")
    plugins = official.dir / "volumes/plugin_daemon"
    for rel, size in (("plugin/langgenius/openai-0.0.26@3c4e.difypkg", 300_000),
                      ("plugin/langgenius/ollama-0.0.6@9a1b.difypkg", 120_000),
                      ("plugin_packages/langgenius/openai-0.0.26@3c4e", 300_000),
                      ("assets/icon-3c4e.svg", 2_000), ("cwd/langgenius/openai-0.0.26@3c4e/manifest.yaml", 500)):
        path = plugins / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    official.redis("SET", "adopttest:string", "välue")
    official.redis("HSET", "adopttest:hash", "f1", "v1", "f2", "v2")
    official.redis("RPUSH", "adopttest:list", "c", "a", "b")
    official.redis("SADD", "adopttest:set", "m3", "m1", "m2")
    official.redis("ZADD", "adopttest:zset", "2", "two", "1", "one")
    official.redis("XADD", "adopttest:stream", "*", "k", "v")
    official.redis("SET", "adopttest:ttl", "lives an hour", "EX", "3600")
    official.redis("SET", "adopttest:short", "gone soon", "EX", "20")
    official.redis("-n", "2", "SET", "adopttest:db2", "another database")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the worker finishes the tasks (Celery results land in Redis too)
        states = {requests.get(f"{base}/tasks/{t}", timeout=10).json().get("state") for t in official.tasks}
        if states == {"SUCCESS"}:
            break
        time.sleep(1)
    assert states == {"SUCCESS"}, states


def tables(psql, db: str) -> dict[str, list[str]]:
    """Every table of a database: the md5 of each row, sorted (a fingerprint independent of adopt's)."""
    names = psql("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                 "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1", db)
    return {name: sorted(psql(f"SELECT md5(t::text) FROM {name} t", db)) for name in names}


def host_files(folder: Path) -> dict[str, str]:
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if path.is_symlink():
                out[str(path.relative_to(folder))] = "-> " + os.readlink(path)
            else:
                out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def redis_test_keys(dump) -> dict[str, str]:
    """The test's own keys (adopttest:*), each as its type and a readable value."""
    out = {}
    for db in ("0", "2"):
        for key in dump("-n", db, "--scan", "--pattern", "adopttest:*").split():
            if key == "adopttest:short":
                continue
            kind = dump("-n", db, "TYPE", key).strip()
            args = {"string": ["GET", key], "hash": ["HGETALL", key], "list": ["LRANGE", key, "0", "-1"],
                    "set": ["SMEMBERS", key], "zset": ["ZRANGE", key, "0", "-1", "WITHSCORES"],
                    "stream": ["XRANGE", key, "-", "+"]}[kind]
            value = dump("-n", db, *args)
            if kind in ("set", "hash"):
                value = "\n".join(sorted(value.splitlines()))
            ttl = int(dump("-n", db, "TTL", key).strip())
            out[f"{db}/{key}"] = f"{kind}|{'ttl' if ttl > 0 else 'persist'}|{value}"
    return out
