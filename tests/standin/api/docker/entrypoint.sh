#!/bin/bash
# TEST DOUBLE - NOT DIFY, NEVER A DEFAULT.
# /entrypoint.sh of the dify-api stand-in. Follows Dify 1.13.3's api/docker/entrypoint.sh (and 1.16.1's,
# which is not stored anywhere readable: assumed the same but for its queue list): MODE selects
# api (default), worker, beat, migration or job; MIGRATION_ENABLED=true migrates first. Differences:
# MODE=migration migrates whatever MIGRATION_ENABLED says, a failed migration stops the container
# (Dify logs it and starts anyway), api/worker/beat refuse to start without SECRET_KEY, and refuse
# to start on a storage volume their user (uid 1001, as Dify's) cannot write (Dify fails at the
# first write instead: tests/standin/api/standin/storage.py).
set -e

export LANG=${LANG:-C.UTF-8}
export LC_ALL=${LC_ALL:-C.UTF-8}
export PYTHONIOENCODING=${PYTHONIOENCODING:-utf-8}

MODE="${MODE:-api}"

# say LEVEL MESSAGE: a log line (stdout; ERROR on stderr), as JSON when LOG_OUTPUT_FORMAT=json.
say() {
  if [[ "$1" == "ERROR" ]]; then
    say_ "$@" >&2
  else
    say_ "$@"
  fi
}
say_() {
  if [[ "${LOG_OUTPUT_FORMAT,,}" == "json" ]]; then
    printf '{"ts": "%s", "severity": "%s", "service": "dify-api-standin", "mode": "%s", "hostname": "%s", "logger": "entrypoint", "message": "%s"}\n' \
      "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$1" "${MODE}" "${HOSTNAME}" "$2"
  else
    echo "$2"
  fi
}

say INFO "dify-api stand-in (TEST DOUBLE) image $(cat /app/api/STANDIN_VERSION 2>/dev/null || echo unknown), MODE=${MODE}"

require_secret_key() {
  if [[ -z "${SECRET_KEY}" ]]; then
    say ERROR "SECRET_KEY is empty. Set SECRET_KEY (for example: openssl rand -base64 42) and start again."
    exit 1
  fi
}

require_writable_storage() {
  python3 -m standin.storage || exit 1
}

run_migrations() {
  say INFO "Running migrations"
  flask upgrade-db
}

if [[ "${MODE}" == "migration" ]]; then
  run_migrations
  say INFO "Migration completed, exiting normally"
  exit 0
fi

if [[ "${MIGRATION_ENABLED}" == "true" ]]; then
  run_migrations
fi

if [[ "${MODE}" == "worker" ]]; then
  require_secret_key
  require_writable_storage
  if [ "${CELERY_AUTO_SCALE,,}" = "true" ]; then
    AVAILABLE_CORES=$(nproc)
    MAX_WORKERS=${CELERY_MAX_WORKERS:-$AVAILABLE_CORES}
    MIN_WORKERS=${CELERY_MIN_WORKERS:-1}
    CONCURRENCY_OPTION="--autoscale=${MAX_WORKERS},${MIN_WORKERS}"
  else
    CONCURRENCY_OPTION="-c ${CELERY_WORKER_AMOUNT:-1}"
  fi

  # The self-hosted list of the release this image stands in for (standin/config.py QUEUES_BY_RELEASE,
  # Dify's own lists: difyops/release_sets/dify-<release>.yaml `queues`; tests/unit/test_contract.py
  # keeps them equal).
  RELEASE_QUEUES="$(python3 -c 'from standin import config; print(config.DEFAULT_QUEUES)')"
  DEFAULT_QUEUES="${CELERY_QUEUES:-${RELEASE_QUEUES}}"
  if [[ -n "${CELERY_WORKER_QUEUES}" ]]; then
    DEFAULT_QUEUES="${CELERY_WORKER_QUEUES}"
    say INFO "Using CELERY_WORKER_QUEUES: ${DEFAULT_QUEUES}"
  fi
  if [[ -n "${CELERY_WORKER_CONCURRENCY}" ]]; then
    CONCURRENCY_OPTION="-c ${CELERY_WORKER_CONCURRENCY}"
    say INFO "Using CELERY_WORKER_CONCURRENCY: ${CELERY_WORKER_CONCURRENCY}"
  fi
  WORKER_POOL="${CELERY_WORKER_POOL:-${CELERY_WORKER_CLASS:-gevent}}"
  say INFO "Starting Celery worker with queues: ${DEFAULT_QUEUES}"

  exec celery -A celery_entrypoint.celery worker -P "${WORKER_POOL}" ${CONCURRENCY_OPTION} \
    --max-tasks-per-child "${MAX_TASKS_PER_CHILD:-50}" --prefetch-multiplier "${CELERY_PREFETCH_MULTIPLIER:-1}" \
    --loglevel "${LOG_LEVEL:-INFO}" -Q "${DEFAULT_QUEUES}"

elif [[ "${MODE}" == "beat" ]]; then
  require_secret_key
  require_writable_storage
  exec celery -A celery_entrypoint.celery beat --loglevel "${LOG_LEVEL:-INFO}"

elif [[ "${MODE}" == "job" ]]; then
  if [[ $# -eq 0 ]]; then
    echo "Error: No command specified for job mode."
    echo "Usage: docker run -e MODE=job difyops-standin/dify-api:v1 upgrade-db"
    echo "Stand-in commands: upgrade-db, db upgrade, db current, db history, standin-info"
    exit 1
  fi
  echo "Running Flask job command: flask $*"
  set +e
  flask "$@"
  JOB_EXIT_CODE=$?
  set -e
  if [[ ${JOB_EXIT_CODE} -eq 0 ]]; then
    echo "Job completed successfully."
  else
    echo "Job failed with exit code ${JOB_EXIT_CODE}."
  fi
  exit ${JOB_EXIT_CODE}

else
  require_secret_key
  require_writable_storage
  if [[ "${DEBUG}" == "true" ]]; then
    exec flask run --host="${DIFY_BIND_ADDRESS:-0.0.0.0}" --port="${DIFY_PORT:-5001}" --debug
  else
    exec gunicorn \
      --bind "${DIFY_BIND_ADDRESS:-0.0.0.0}:${DIFY_PORT:-5001}" \
      --workers "${SERVER_WORKER_AMOUNT:-1}" \
      --worker-class "${SERVER_WORKER_CLASS:-gevent}" \
      --worker-connections "${SERVER_WORKER_CONNECTIONS:-10}" \
      --timeout "${GUNICORN_TIMEOUT:-360}" \
      app:app
  fi
fi
