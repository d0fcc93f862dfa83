#!/bin/sh
# Runs once, on the Patroni node that bootstraps the HA cluster (Patroni's bootstrap.post_bootstrap),
# as the single-node image's 10-dify-databases.sh does at initdb: Dify's database with pgvector and
# the plugin daemon's database. Replicas get them by streaming replication.
# $1 is the superuser connection string Patroni passes (its password comes through PGPASSFILE).
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc -d "$1" \
  --set dify_db="${DB_DATABASE:-dify}" --set plugin_db="${DB_PLUGIN_DATABASE:-dify_plugin}" <<'SQL'
SELECT format('CREATE DATABASE %I', :'dify_db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dify_db')\gexec
SELECT format('CREATE DATABASE %I', :'plugin_db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'plugin_db')\gexec
\connect :"dify_db"
CREATE EXTENSION IF NOT EXISTS vector;
SQL
