-- The service's own database role: it owns the orchestrator database, so it can create its
-- tables and apply its migrations on start, but it is not a superuser and can create neither
-- databases nor roles.
--
-- docker-compose.yml mounts this directory at /docker-entrypoint-initdb.d: the postgres image
-- runs it once, as the superuser, connected to POSTGRES_DB, when it initialises an empty data
-- directory. An existing volume is not touched: run this file by hand there (psql -f, with the
-- same variables set), or recreate the volume.
--
-- Environment: ORCHESTRATOR_DB_USER, ORCHESTRATOR_DB_PASSWORD, POSTGRES_DB (the image sets it).
\set ON_ERROR_STOP on
\getenv app_user ORCHESTRATOR_DB_USER
\getenv app_password ORCHESTRATOR_DB_PASSWORD
\getenv app_database POSTGRES_DB

CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER DATABASE :"app_database" OWNER TO :"app_user";
-- Since PostgreSQL 15 the public schema belongs to the database owner already; said here for
-- older servers, where it belongs to the superuser.
ALTER SCHEMA public OWNER TO :"app_user";
