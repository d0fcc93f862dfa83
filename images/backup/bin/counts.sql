-- Exact row count of every ordinary table outside the system schemas, one "schema.table<TAB>count"
-- line each. Used by pg-dump.sh (inside the dump's snapshot) and pg-restore.sh (after a restore),
-- so the two sides of a comparison count the same way.
SELECT n.nspname || '.' || c.relname,
       (xpath('/row/c/text()',
              query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')
       ))[1]::text::bigint
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%'
 ORDER BY 1;
