-- Fingerprint of every table and sequence of the current database, the same on any PostgreSQL major
-- version from 12 on, so two servers (15 and 17, say) can be compared after a move. One line each:
--   table<TAB>schema.name<TAB>rows<TAB>hash      hash: two sums of 60-bit slices of each row's md5,
--                                                 so the order of the rows does not matter
--   sequence<TAB>schema.name<TAB>last_value<TAB>is_called
-- A row's md5 is taken of ROW(columns)::text, with pgvector's vector and halfvec columns as real[]
-- (their own text form changed between pgvector releases; a float array's did not). Run with
-- TimeZone=UTC, DateStyle=ISO, IntervalStyle=postgres, extra_float_digits=1, bytea_output=hex
-- (pg-move.sh sets them through PGOPTIONS), so both servers print values alike.
-- Used by pg-move.sh (source inside its exported snapshot, target after the restore).
WITH tables AS (
    SELECT c.oid, n.nspname, c.relname
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'r'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%'
       AND n.nspname NOT LIKE 'pg_temp%'
), columns AS (
    SELECT t.oid,
           string_agg(CASE WHEN ty.typname IN ('vector', 'halfvec') THEN format('%I::real[]', a.attname)
                           ELSE format('%I', a.attname) END, ', ' ORDER BY a.attnum) AS list
      FROM tables t
      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type ty ON ty.oid = a.atttypid
     GROUP BY t.oid
), sums AS (
    SELECT t.nspname || '.' || t.relname AS name,
           query_to_xml(format(
               'SELECT count(*) AS n, '
               || 'coalesce(sum((''x'' || substr(d, 1, 15))::bit(60)::bigint), 0) || ''-'' || '
               || 'coalesce(sum((''x'' || substr(d, 16, 15))::bit(60)::bigint), 0) AS h '
               || 'FROM (SELECT md5(ROW(%s)::text) AS d FROM %I.%I) s',
               coalesce(c.list, ''), t.nspname, t.relname), false, true, '') AS x
      FROM tables t
      LEFT JOIN columns c ON c.oid = t.oid
)
SELECT 'table', name, (xpath('/row/n/text()', x))[1]::text, (xpath('/row/h/text()', x))[1]::text
  FROM sums
UNION ALL
SELECT 'sequence', schemaname || '.' || sequencename, coalesce(last_value::text, ''),
       CASE WHEN last_value IS NULL THEN 'f' ELSE 't' END
  FROM pg_sequences
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1, 2;
