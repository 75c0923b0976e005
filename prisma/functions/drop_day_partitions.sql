CREATE OR REPLACE FUNCTION drop_day_partitions(day date)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
-- Drops one UTC day of every table partitioned by the task's day (those create_day_partitions
-- makes): no row is read.
DECLARE
  parent text;
BEGIN
  FOREACH parent IN ARRAY ARRAY['task_events', 'callback_deliveries', 'dead_letters', 'step_items', 'steps', 'tasks'] LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I', parent || '_p' || to_char(day, 'YYYYMMDD'));
  END LOOP;
END $function$;
