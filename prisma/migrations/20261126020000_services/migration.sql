-- The service registry: third-party HTTP services whose OpenAPI operations become tools
-- (`<service>.<operationId>`). Secrets are never stored: `auth` holds the type and the name of
-- the secret (`secret_ref`), resolved from the environment or SERVICE_SECRETS_FILE at call time.
CREATE TABLE "services" (
    "name" TEXT NOT NULL,
    "base_url" TEXT NOT NULL,
    "openapi_url" TEXT,
    "headers" JSONB NOT NULL DEFAULT '{}',
    "auth" JSONB,
    "health_path" TEXT,
    "timeout_ms" INTEGER NOT NULL DEFAULT 30000,
    "circuit" JSONB,
    "concurrency" INTEGER,
    "rate_limit" JSONB,
    "document_version" INTEGER NOT NULL DEFAULT 0,
    "health" JSONB,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "services_pkey" PRIMARY KEY ("name")
);

-- Every OpenAPI document fetched for a service, by version (the newest is the one in use);
-- removed with its service (by the registry: the schema has no foreign keys).
CREATE TABLE "service_documents" (
    "service" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "sha256" TEXT NOT NULL,
    "document" JSONB NOT NULL,
    "fetched_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "service_documents_pkey" PRIMARY KEY ("service", "version")
);
