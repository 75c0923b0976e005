CREATE OR REPLACE FUNCTION create_day_partitions(day date)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
-- The partitions of one UTC day, named <table>_pYYYYMMDD, of every table partitioned by the
-- task's day; nothing happens for those that exist. The one definition of a day's partitions: the
-- retention job (src/persistence/partitions.ts), the tests and the bench use it.
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['tasks', 'steps', 'step_items', 'dead_letters', 'callback_deliveries', 'task_events'] LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   parent || '_p' || to_char(day, 'YYYYMMDD'), parent,
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
  END LOOP;
END $function$;
