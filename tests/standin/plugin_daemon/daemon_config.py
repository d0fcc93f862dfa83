# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# The configuration rules of langgenius/dify-plugin-daemon 0.5.3, written for the stand-in from
# reading the daemon's own files at tag 0.5.3 (commit 23a4662e65a2bdeb7e7731a9081e6ba545f9838a):
#   internal/types/app/config.go   the Config struct: variable names, types, envconfig defaults,
#                                  `validate:"required"` fields, and Validate()'s own rules
#   internal/types/app/default.go  SetDefault(): values filled in when a field is still zero
#   cmd/server/main.go             envconfig.Process, then SetDefault, then Validate; a failure
#                                  of either is a panic ("error processing environment variables"
#                                  before the recover is in place: Go exits 2; "invalid
#                                  configuration" after it: pkg/utils/log RecoverAndExit exits 1)
# Parsing follows kelseyhightower/envconfig v1.4.0 (go.mod at 0.5.3): a variable that is set is
# parsed by its field's type, an empty value included (an empty number or boolean is an error);
# a default tag applies only to a variable that is not set at all.
# The 0.6 line (0.6.3, commit 54432d8a0a77dc6a29bc608918590a977ed46cf7, what Dify 1.15.0 and 1.16.1
# run) reads 0.5.3's variables and more (LINE_0_6 below) and checks more: SERVER_TZ must be a time
# zone (cmd/server/main.go loads it before anything: "load location error"), DB_GORM_LOG_LEVEL one
# of silent/error/warn/info, LOG_LEVEL one of DEBUG/INFO/WARN/ERROR, the DB_*_TIMEOUT durations
# parse as Go's time.ParseDuration does. Its `/app/commandline migrate` (cmd/commandline/migrate.go)
# checks the same and prints "invalid configuration: <err>", exit 1, before it migrates.
# Pure Python, no third-party import: tests/unit imports it directly.
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

STR, BOOL, INT, INT64, UINT16, FLOAT, LIST, PTR_STR = "str", "bool", "int", "int64", "uint16", "float", "list", "*str"
DURATION = "time.Duration"

# (variable, type, envconfig default or None). Order as in config.go.
FIELDS: tuple[tuple[str, str, str | None], ...] = (
    ("SERVER_HOST", STR, None), ("SERVER_PORT", UINT16, None), ("SERVER_KEY", STR, None),
    ("ADMIN_API_ENABLED", BOOL, "false"), ("ADMIN_API_KEY", STR, None),
    ("DIFY_INNER_API_URL", STR, None), ("DIFY_INNER_API_KEY", STR, None),
    ("PLUGIN_STORAGE_TYPE", STR, None), ("PLUGIN_STORAGE_OSS_BUCKET", STR, None),
    ("S3_USE_AWS_MANAGED_IAM", BOOL, "false"), ("S3_USE_AWS", BOOL, "true"), ("S3_ENDPOINT", STR, None),
    ("S3_USE_PATH_STYLE", BOOL, "true"), ("AWS_ACCESS_KEY", STR, None), ("AWS_SECRET_KEY", STR, None),
    ("AWS_REGION", STR, None),
    ("TENCENT_COS_SECRET_KEY", STR, None), ("TENCENT_COS_SECRET_ID", STR, None),
    ("TENCENT_COS_REGION", STR, None), ("TENCENT_COS_ENDPOINT", STR, None),
    ("AZURE_BLOB_STORAGE_CONTAINER_NAME", STR, None), ("AZURE_BLOB_STORAGE_CONNECTION_STRING", STR, None),
    ("ALIYUN_OSS_REGION", STR, None), ("ALIYUN_OSS_ENDPOINT", STR, None), ("ALIYUN_OSS_ACCESS_KEY_ID", STR, None),
    ("ALIYUN_OSS_ACCESS_KEY_SECRET", STR, None), ("ALIYUN_OSS_AUTH_VERSION", STR, "v4"),
    ("ALIYUN_OSS_PATH", STR, None), ("ALIYUN_OSS_CLOUDBOX_ID", STR, None),
    ("GCS_CREDENTIALS", STR, None),
    ("HUAWEI_OBS_ACCESS_KEY", STR, None), ("HUAWEI_OBS_SECRET_KEY", STR, None), ("HUAWEI_OBS_SERVER", STR, None),
    ("HUAWEI_OBS_PATH_STYLE", BOOL, "false"),
    ("VOLCENGINE_TOS_ENDPOINT", STR, None), ("VOLCENGINE_TOS_ACCESS_KEY", STR, None),
    ("VOLCENGINE_TOS_SECRET_KEY", STR, None), ("VOLCENGINE_TOS_REGION", STR, None),
    ("PLUGIN_STORAGE_LOCAL_ROOT", STR, None),
    ("PLUGIN_REMOTE_INSTALLING_HOST", STR, None), ("PLUGIN_REMOTE_INSTALLING_PORT", UINT16, None),
    ("PLUGIN_REMOTE_INSTALLING_ENABLED", BOOL, "true"), ("PLUGIN_REMOTE_INSTALLING_MAX_CONN", INT, None),
    ("PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN", INT, None),
    ("PLUGIN_REMOTE_INSTALL_SERVER_EVENT_LOOP_NUMS", INT, None),
    ("PLUGIN_ENDPOINT_ENABLED", BOOL, "true"),
    ("PLUGIN_WORKING_PATH", STR, None), ("PLUGIN_MEDIA_CACHE_SIZE", UINT16, None),
    ("PLUGIN_MEDIA_CACHE_PATH", STR, None), ("PLUGIN_INSTALLED_PATH", STR, None),
    ("PLUGIN_PACKAGE_CACHE_PATH", STR, None),
    ("PLUGIN_MAX_EXECUTION_TIMEOUT", INT, None), ("PLUGIN_LOCAL_LAUNCHING_CONCURRENT", INT, None),
    ("PLATFORM", STR, None), ("ROUTINE_POOL_SIZE", INT, None),
    ("REDIS_HOST", STR, None), ("REDIS_PORT", UINT16, None), ("REDIS_PASSWORD", STR, None),
    ("REDIS_USERNAME", STR, None), ("REDIS_DB", INT, None), ("REDIS_USE_SSL", BOOL, None),
    ("REDIS_SSL_CERT_REQS", STR, None), ("REDIS_SSL_CA_CERTS", STR, None),
    ("REDIS_USE_SENTINEL", BOOL, None), ("REDIS_SENTINELS", STR, None), ("REDIS_SENTINEL_SERVICE_NAME", STR, None),
    ("REDIS_SENTINEL_USERNAME", STR, None), ("REDIS_SENTINEL_PASSWORD", STR, None),
    ("REDIS_SENTINEL_SOCKET_TIMEOUT", FLOAT, None),
    ("DB_TYPE", STR, "postgresql"), ("DB_USERNAME", STR, None), ("DB_PASSWORD", STR, None), ("DB_HOST", STR, None),
    ("DB_PORT", UINT16, None), ("DB_DATABASE", STR, None), ("DB_DEFAULT_DATABASE", STR, None),
    ("DB_SSL_MODE", STR, None),
    ("DB_MAX_IDLE_CONNS", INT, "10"), ("DB_MAX_OPEN_CONNS", INT, "30"), ("DB_CONN_MAX_LIFETIME", INT, "3600"),
    ("DB_EXTRAS", STR, None), ("DB_CHARSET", STR, None),
    ("PERSISTENCE_STORAGE_PATH", STR, None), ("PERSISTENCE_STORAGE_MAX_SIZE", INT64, None),
    ("FORCE_VERIFYING_SIGNATURE", BOOL, "true"),
    ("THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED", BOOL, "false"),
    ("THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS", LIST, None),
    ("ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES", BOOL, "true"),
    ("LIFETIME_COLLECTION_HEARTBEAT_INTERVAL", INT, None), ("LIFETIME_COLLECTION_GC_INTERVAL", INT, None),
    ("LIFETIME_STATE_GC_INTERVAL", INT, None), ("DIFY_INVOCATION_CONNECTION_IDLE_TIMEOUT", INT, None),
    ("DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL", PTR_STR, None), ("DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY", PTR_STR, None),
    ("DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT", INT, None),
    ("MAX_PLUGIN_PACKAGE_SIZE", INT64, None), ("MAX_BUNDLE_PACKAGE_SIZE", INT64, None),
    ("MAX_SERVERLESS_TRANSACTION_TIMEOUT", INT, None), ("MAX_SERVERLESS_RETRY_TIMES", INT, "3"),
    ("PYTHON_INTERPRETER_PATH", STR, None), ("UV_PATH", STR, None), ("PYTHON_ENV_INIT_TIMEOUT", INT, None),
    ("PYTHON_COMPILE_ALL_EXTRA_ARGS", STR, None), ("PIP_MIRROR_URL", STR, None),
    ("PIP_PREFER_BINARY", BOOL, "true"), ("PIP_VERBOSE", BOOL, "true"), ("PIP_EXTRA_ARGS", STR, None),
    ("PLUGIN_RUNTIME_BUFFER_SIZE", INT, "1024"), ("PLUGIN_RUNTIME_MAX_BUFFER_SIZE", INT, "5242880"),
    ("PLUGIN_STDIO_BUFFER_SIZE", INT, "1024"), ("PLUGIN_STDIO_MAX_BUFFER_SIZE", INT, "5242880"),
    ("DISPLAY_CLUSTER_LOG", BOOL, None), ("PPROF_ENABLED", BOOL, None),
    ("SENTRY_ENABLED", BOOL, None), ("SENTRY_DSN", STR, None), ("SENTRY_ATTACH_STACKTRACE", BOOL, None),
    ("SENTRY_TRACING_ENABLED", BOOL, None), ("SENTRY_TRACES_SAMPLE_RATE", FLOAT, None),
    ("SENTRY_SAMPLE_RATE", FLOAT, None),
    ("HTTP_PROXY", STR, None), ("HTTPS_PROXY", STR, None), ("NO_PROXY", STR, None),
    ("HEALTH_API_LOG_ENABLED", BOOL, "true"), ("LOG_OUTPUT_FORMAT", STR, "text"),
    ("DIFY_BACKWARDS_INVOCATION_WRITE_TIMEOUT", INT64, "5000"),
    ("DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT", INT64, "240000"),
)
NAMES = frozenset(name for name, _, _ in FIELDS)

# What 0.6.3's config.go adds to 0.5.3's (none removed), with its envconfig defaults.
FIELDS_ADDED_0_6: tuple[tuple[str, str, str | None], ...] = (
    ("SERVER_TZ", STR, "UTC"), ("AZURE_BLOB_STORAGE_ACCOUNT_URL", STR, None),
    ("AZURE_BLOB_STORAGE_USE_MANAGED_IDENTITY", BOOL, "false"),
    ("BAIDU_BOS_ENDPOINT", STR, None), ("BAIDU_BOS_ACCESS_KEY", STR, None), ("BAIDU_BOS_SECRET_KEY", STR, None),
    ("BAIDU_BOS_REGION", STR, None), ("PLUGIN_ASSET_CACHE_SIZE", UINT16, None), ("PLUGIN_INSTALL_TIMEOUT", INT, "15"),
    ("REDIS_KEY_PREFIX", STR, "plugin_daemon"), ("DB_GORM_LOG_LEVEL", STR, None),
    ("DB_CONNECT_TIMEOUT", DURATION, "5s"), ("DB_READ_TIMEOUT", DURATION, "30s"), ("DB_WRITE_TIMEOUT", DURATION, "30s"),
    ("PIP_MIRROR_AUTO_DETECT", BOOL, "true"), ("PIP_MIRROR_CANDIDATES", LIST, None),
    ("PIP_MIRROR_AUTO_DETECT_TIMEOUT", INT, "5"), ("PLUGIN_IGNORE_UV_LOCK", BOOL, "false"),
    ("ENABLE_OTEL", BOOL, "false"), ("OTLP_TRACE_ENDPOINT", STR, None), ("OTLP_METRIC_ENDPOINT", STR, None),
    ("OTLP_BASE_ENDPOINT", STR, "http://localhost:4318"), ("OTEL_API_KEY", STR, None),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", STR, "http/protobuf"), ("OTEL_EXPORTER_TYPE", STR, "otlp"),
    ("OTEL_SAMPLING_RATE", FLOAT, "1.0"), ("OTEL_BATCH_EXPORT_SCHEDULE_DELAY", INT, "5000"),
    ("OTEL_MAX_QUEUE_SIZE", INT, "2048"), ("OTEL_MAX_EXPORT_BATCH_SIZE", INT, "512"),
    ("OTEL_METRIC_EXPORT_INTERVAL", INT, "60000"), ("OTEL_BATCH_EXPORT_TIMEOUT", INT, "10000"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", INT, "30000"), ("PROMETHEUS_ENABLED", BOOL, "true"),
    ("LOG_LEVEL", STR, "INFO"), ("LOG_FILE", STR, None), ("RESPONSE_MAX_BUFFER_SIZE", INT64, "31457280"),
)
LINE_0_5, LINE_0_6 = "0.5", "0.6"
LINES = (LINE_0_5, LINE_0_6)
FIELDS_BY_LINE = {LINE_0_5: FIELDS, LINE_0_6: FIELDS + FIELDS_ADDED_0_6}
NAMES_BY_LINE = {line: frozenset(name for name, _, _ in fields) for line, fields in FIELDS_BY_LINE.items()}
GORM_LOG_LEVELS = ("silent", "error", "warn", "info")  # internal/db/config/config.go at 0.6.3
LOG_LEVELS = ("", "DEBUG", "INFO", "WARN", "ERROR")  # pkg/utils/log/log.go ParseLevel at 0.6.3
# The daemon line an image models: baked in the stand-in image (tests/standin/Dockerfile).
LINE_FILE = Path(__file__).resolve().parent / "DAEMON_LINE"


def image_line() -> str:
    try:
        line = LINE_FILE.read_text().strip()
    except OSError:
        return LINE_0_5
    return line if line in LINES else LINE_0_5

# `validate:"required"` in config.go (go-playground/validator: the zero value fails).
REQUIRED = (
    "SERVER_PORT", "SERVER_KEY", "DIFY_INNER_API_URL", "DIFY_INNER_API_KEY", "PLUGIN_STORAGE_TYPE",
    "PLUGIN_INSTALLED_PATH", "PLUGIN_MAX_EXECUTION_TIMEOUT", "PLUGIN_LOCAL_LAUNCHING_CONCURRENT", "PLATFORM",
    "ROUTINE_POOL_SIZE", "DB_USERNAME", "DB_PASSWORD", "DB_HOST", "DB_PORT", "DB_DATABASE", "DB_DEFAULT_DATABASE",
    "DB_SSL_MODE", "LIFETIME_COLLECTION_HEARTBEAT_INTERVAL", "LIFETIME_COLLECTION_GC_INTERVAL",
    "LIFETIME_STATE_GC_INTERVAL", "DIFY_INVOCATION_CONNECTION_IDLE_TIMEOUT", "MAX_PLUGIN_PACKAGE_SIZE",
    "MAX_BUNDLE_PACKAGE_SIZE", "PYTHON_ENV_INIT_TIMEOUT",
)
SSL_MODES = ("disable", "require")  # validate:"required,oneof=disable require"

# default.go SetDefault(): applied where the value is still the zero value.
SET_DEFAULT = {
    "SERVER_HOST": "0.0.0.0", "SERVER_PORT": 5002, "ROUTINE_POOL_SIZE": 10000,
    "LIFETIME_COLLECTION_GC_INTERVAL": 60, "LIFETIME_COLLECTION_HEARTBEAT_INTERVAL": 5,
    "LIFETIME_STATE_GC_INTERVAL": 300, "DIFY_INVOCATION_CONNECTION_IDLE_TIMEOUT": 120,
    "PLUGIN_REMOTE_INSTALL_SERVER_EVENT_LOOP_NUMS": 8, "PLUGIN_REMOTE_INSTALLING_MAX_CONN": 256,
    "MAX_PLUGIN_PACKAGE_SIZE": 52428800, "MAX_BUNDLE_PACKAGE_SIZE": 52428800 * 12,
    "MAX_SERVERLESS_TRANSACTION_TIMEOUT": 300, "PLUGIN_MAX_EXECUTION_TIMEOUT": 600,
    "PLUGIN_STORAGE_TYPE": "local", "PLUGIN_MEDIA_CACHE_SIZE": 1024,
    "DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT": 240, "PLUGIN_REMOTE_INSTALLING_MAX_SINGLE_TENANT_CONN": 5,
    "DB_SSL_MODE": "disable", "PLUGIN_STORAGE_LOCAL_ROOT": "storage", "PLUGIN_INSTALLED_PATH": "plugin",
    "PLUGIN_MEDIA_CACHE_PATH": "assets", "PERSISTENCE_STORAGE_PATH": "persistence",
    "PLUGIN_LOCAL_LAUNCHING_CONCURRENT": 2, "PERSISTENCE_STORAGE_MAX_SIZE": 100 * 1024 * 1024,
    "PLUGIN_PACKAGE_CACHE_PATH": "plugin_packages", "PYTHON_INTERPRETER_PATH": "/usr/bin/python3",
    "PYTHON_ENV_INIT_TIMEOUT": 120, "DIFY_BACKWARDS_INVOCATION_WRITE_TIMEOUT": 5000,
    "DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT": 240000,
}

_BITS = {INT: 64, INT64: 64}  # Go's int is 64 bits on amd64 and arm64
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


_DURATION = re.compile(r"^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")


def _duration(raw: str):
    """Go's time.ParseDuration: "0", or numbers each with a unit (300ms, 1m30s)."""
    if raw in ("0", "+0", "-0") or _DURATION.match(raw):
        return raw
    if re.fullmatch(r"[-+]?\d+(?:\.\d*)?", raw):
        raise ValueError(f'time: missing unit in duration "{raw}"')
    raise ValueError(f'time: invalid duration "{raw}"')


def _time_zone_ok(name: str) -> bool:
    """go-playground/validator's `timezone`: a name time.LoadLocation knows; never "" or "local"."""
    if name == "" or name.lower() == "local":
        return False
    if name == "UTC":
        return True
    try:
        import zoneinfo
        zoneinfo.ZoneInfo(name)
    except Exception:  # noqa: BLE001 (unknown, malformed, or no zone database)
        return False
    return True


class ParseError(ValueError):
    """envconfig.Process failed: the daemon panics before its recover is set up (exit 2)."""


class InvalidConfiguration(ValueError):
    """Validate() failed: the daemon logs "invalid configuration" and exits 1."""


def _parse(name: str, kind: str, raw: str):
    """One value as envconfig v1.4.0 parses it (strconv rules; no trimming)."""
    try:
        if kind in (STR, PTR_STR):
            return raw
        if kind == DURATION:
            return _duration(raw)
        if kind == LIST:
            return [part for part in raw.split(",")] if raw.strip() else []
        if kind == BOOL:
            if raw in _TRUE:
                return True
            if raw in _FALSE:
                return False
            raise ValueError(f'strconv.ParseBool: parsing "{raw}": invalid syntax')
        if kind == FLOAT:
            if not raw.strip() or raw != raw.strip():
                raise ValueError(f'strconv.ParseFloat: parsing "{raw}": invalid syntax')
            return float(raw)
        # integers: base prefix allowed (ParseInt/ParseUint with base 0), no sign for uint
        if not raw or raw != raw.strip():
            raise ValueError(f'strconv.Parse{"Uint" if kind == UINT16 else "Int"}: parsing "{raw}": invalid syntax')
        value = int(raw, 0)
        if kind == UINT16:
            if raw.startswith(("-", "+")) or not 0 <= value <= 65535:
                raise ValueError(f'strconv.ParseUint: parsing "{raw}": value out of range')
        elif not -(2 ** (_BITS[kind] - 1)) <= value < 2 ** (_BITS[kind] - 1):
            raise ValueError(f'strconv.ParseInt: parsing "{raw}": value out of range')
        return value
    except ValueError as exc:
        message = (str(exc) if str(exc).startswith(("strconv.", "time: "))
                   else f'strconv: parsing "{raw}": invalid syntax')
        raise ParseError(f"envconfig.Process: assigning {name} to {name}: converting '{raw}' to type "
                         f"{kind}. details: {message}") from None


def _zero(kind: str):
    return {STR: "", BOOL: False, LIST: [], FLOAT: 0.0, PTR_STR: None, DURATION: "0"}.get(kind, 0)


def load(environ: Mapping[str, str] | None = None, line: str | None = None) -> dict:
    """The daemon's configuration from an environment, or ParseError / InvalidConfiguration
    with the message the real daemon gives (line: "0.5" or "0.6", the image's own by default)."""
    environ = os.environ if environ is None else environ
    line = line or image_line()
    config: dict = {}
    for name, kind, default in FIELDS_BY_LINE[line]:
        if name in environ:
            config[name] = _parse(name, kind, environ[name])
        elif default is not None:
            config[name] = _parse(name, kind, default)
        else:
            config[name] = _zero(kind)
    # SetDefault()
    if config["DB_TYPE"] in ("oceanbase", "seekdb"):
        config["DB_TYPE"] = "mysql"
    for name, value in SET_DEFAULT.items():
        if not config[name]:
            config[name] = value
    if line == LINE_0_6:  # default.go at 0.6.3
        for name, value in (("SERVER_TZ", "UTC"), ("PLUGIN_ASSET_CACHE_SIZE", 256), ("LOG_LEVEL", "INFO")):
            if not config[name]:
                config[name] = value
    if not config["DB_DEFAULT_DATABASE"]:
        if config["DB_TYPE"] in ("postgresql", "pgbouncer"):
            config["DB_DEFAULT_DATABASE"] = "postgres"
        elif config["DB_TYPE"] == "mysql":
            config["DB_DEFAULT_DATABASE"] = "mysql"
    validate(config, line)
    return config


def validate(config: dict, line: str = LINE_0_5) -> None:
    """Validate(): the struct tags first (every failing field, one line each), then its own rules
    in their order (the first that fails)."""
    failed = [name for name in REQUIRED if not config[name]]
    lines = [f"Key: 'Config.{name}' Error:Field validation for '{name}' failed on the 'required' tag"
             for name in failed]
    if "DB_SSL_MODE" not in failed and config["DB_SSL_MODE"] not in SSL_MODES:
        lines.append("Key: 'Config.DB_SSL_MODE' Error:Field validation for 'DB_SSL_MODE' failed on the 'oneof' tag")
    if line == LINE_0_6 and not _time_zone_ok(config["SERVER_TZ"]):
        lines.append("Key: 'Config.SERVER_TZ' Error:Field validation for 'SERVER_TZ' failed on the 'timezone' tag")
    if lines:
        raise InvalidConfiguration("\n".join(lines))
    if config["PLUGIN_REMOTE_INSTALLING_ENABLED"]:
        if config["PLUGIN_REMOTE_INSTALLING_HOST"] == "":
            raise InvalidConfiguration("plugin remote installing host is empty")
        if config["PLUGIN_REMOTE_INSTALLING_PORT"] == 0:
            raise InvalidConfiguration("plugin remote installing port is empty")
        if config["PLUGIN_REMOTE_INSTALLING_MAX_CONN"] == 0:
            raise InvalidConfiguration("plugin remote installing max connection is empty")
        if config["PLUGIN_REMOTE_INSTALL_SERVER_EVENT_LOOP_NUMS"] == 0:
            raise InvalidConfiguration("plugin remote install server event loop nums is empty")
    if config["PLATFORM"] == "serverless":
        if config["DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL"] is None:
            raise InvalidConfiguration("dify plugin serverless connector url is empty")
        if config["DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY"] is None:
            raise InvalidConfiguration("dify plugin serverless connector api key is empty")
        if config["MAX_SERVERLESS_TRANSACTION_TIMEOUT"] == 0:
            raise InvalidConfiguration("max serverless transaction timeout is empty")
    elif config["PLATFORM"] == "local":
        if config["PLUGIN_WORKING_PATH"] == "":
            raise InvalidConfiguration("plugin working path is empty")
    else:
        raise InvalidConfiguration("invalid platform")
    if config["PLUGIN_PACKAGE_CACHE_PATH"] == "":
        raise InvalidConfiguration("plugin package cache path is empty")
    if line == LINE_0_6:
        level = config["DB_GORM_LOG_LEVEL"]
        if level != "" and level not in GORM_LOG_LEVELS:
            raise InvalidConfiguration(f"invalid gorm log level: '{level}'. Valid levels are: silent, error, warn, info")
        if config["LOG_LEVEL"] not in LOG_LEVELS:
            raise InvalidConfiguration(f'invalid LOG_LEVEL "{config["LOG_LEVEL"]}". '
                                       "Valid values are: DEBUG, INFO, WARN, ERROR")


@dataclass(frozen=True)
class Refusal:
    code: int
    message: str


def check(environ: Mapping[str, str] | None = None, line: str | None = None) -> Refusal | None:
    """None when the daemon would start; else the exit code and the log line it would print."""
    try:
        load(environ, line)
    except ParseError as exc:
        return Refusal(2, f"error processing environment variables: {exc}")
    except InvalidConfiguration as exc:
        return Refusal(1, f"invalid configuration: {exc}")
    return None
