#!/bin/sh
# Runs once, when the PostgreSQL data directory is first created (the official image's
# /docker-entrypoint-initdb.d contract). Creates pgvector in Dify's database and the plugin
# daemon's database, so neither needs superuser rights at run time.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE EXTENSION IF NOT EXISTS vector;
SELECT 'CREATE DATABASE ${DB_PLUGIN_DATABASE:-dify_plugin}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${DB_PLUGIN_DATABASE:-dify_plugin}')\gexec
SQL
