/*-------------------------------------------------------------------------
 *
 * bv_iot.c
 *	  bv_iot's entry point: settings, the bridge worker's registration, and
 *	  iot.ingest(jsonb), the SQL way in.
 *
 * The library is preloaded (shared_preload_libraries); _PG_init defines
 * bv_iot.database and bv_iot.naptime and registers one static background
 * worker, the MQTT bridge (bridge.c).  Loaded without preloading (CREATE
 * EXTENSION in a server that does not preload it) the SQL functions work
 * and no bridge runs.
 *
 * iot.ingest(readings) runs the bridge's validator (validate.c) and batch
 * writer (batch.c) on a jsonb value, inside the caller's transaction.  It
 * is SECURITY DEFINER (it writes iot.telemetry and iot.quarantine, which
 * callers cannot); the caller's own role (GetOuterUserId, the role outside
 * any SECURITY DEFINER function) decides whether the readings are limited
 * to devices owned by bv.actor(): superusers and bv_service members may
 * write for any device.
 *
 * Memory: the batch lives in a child of the function's memory context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "bv_iot.h"

PG_MODULE_MAGIC;

void _PG_init(void);

char *iot_database = NULL;
int iot_naptime_ms = 10000;

PG_FUNCTION_INFO_V1(iot_ingest);
PG_FUNCTION_INFO_V1(iot_caller_is_privileged);

void
_PG_init(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomStringVariable("bv_iot.database",
							   "Database in which the MQTT bridge runs (where bv_iot is installed).",
							   NULL, &iot_database, "bitvelocity", PGC_POSTMASTER, 0, NULL, NULL,
							   NULL);
	DefineCustomIntVariable("bv_iot.naptime",
							"How long the bridge waits between checks while bv_iot is not installed or the bridge is disabled.",
							NULL, &iot_naptime_ms, 10000, 100, 3600000, PGC_SIGHUP, GUC_UNIT_MS, NULL,
							NULL, NULL);
	MarkGUCPrefixReserved("bv_iot");

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bv_iot");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bv_iot_bridge_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bv_iot bridge");
	snprintf(worker.bgw_type, BGW_MAXLEN, "bv_iot bridge");
	RegisterBackgroundWorker(&worker);
}

/* Validation limits from iot.bridge_config (SPI connected). */
static void
load_limits(IotLimits *lim)
{
	bool isnull;
	int rc = SPI_execute("SELECT max_payload_bytes, max_readings, "
						 "(extract(epoch FROM max_future) * 1000000)::bigint, "
						 "(extract(epoch FROM max_age) * 1000000)::bigint FROM iot.bridge_config",
						 true, 1);

	lim->max_payload_bytes = 65536;
	lim->max_readings = 1000;
	lim->max_future_us = 600 * USECS_PER_SEC;
	lim->max_age_us = 7 * USECS_PER_DAY;
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return;
	lim->max_payload_bytes = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	lim->max_readings = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	lim->max_future_us = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	lim->max_age_us = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
}

/* The caller may write for any device: superuser or bv_service member. */
static bool
caller_is_privileged(void)
{
	Oid caller = GetOuterUserId();
	Oid service = get_role_oid("bv_service", true);

	return superuser_arg(caller) || (OidIsValid(service) && has_privs_of_role(caller, service));
}

/*
 * iot_caller_is_privileged
 *		iot._caller_is_privileged(): for SECURITY DEFINER functions, whether
 *		the role that called them (not the definer) may act on any device.
 */
Datum
iot_caller_is_privileged(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(caller_is_privileged());
}

/*
 * iot_ingest
 *		iot.ingest(readings jsonb) -> (inserted, quarantined)
 */
Datum
iot_ingest(PG_FUNCTION_ARGS)
{
	TupleDesc tupdesc;
	IotBatch b;
	IotLimits lim;
	IotFlushResult r;
	char *owner = NULL;
	Datum values[2];
	bool nulls[2] = {false, false};
	Jsonb *jb;
	char *raw;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "bv_iot: return type must be a row type");
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("readings must not be null"),
						errhint("Pass one reading as a JSON object or several as a JSON array.")));
	jb = PG_GETARG_JSONB_P(0);

	SPI_connect();
	load_limits(&lim);
	if (!caller_is_privileged())
	{
		if (SPI_execute("SELECT bv.actor()", true, 1) == SPI_OK_SELECT && SPI_processed == 1)
			owner = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (owner == NULL)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							errmsg("iot.ingest needs an actor"),
							errhint("Call it with a JWT whose \"sub\" names the devices' owner, or as bv_service.")));
	}
	iot_batch_init(&b, CurrentMemoryContext);
	raw = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	if ((int) strlen(raw) > lim.max_payload_bytes)
		iot_batch_quarantine(&b, NULL, NULL, "oversized", "The readings exceed max_payload_bytes.",
							 raw, strlen(raw));
	else
		iot_add_jsonb(&b, &lim, jb, NULL, NULL, raw, strlen(raw), GetCurrentTimestamp());
	r = iot_batch_write(&b, "sql", owner);
	SPI_finish();

	values[0] = Int64GetDatum(r.inserted);
	values[1] = Int64GetDatum(r.quarantined);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
