/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Writes a batch of validated readings and refusals: one statement for
 *	  the readings, one for the quarantine, whatever the batch's size.
 *
 * The readings travel as parallel arrays (device, ts, metric, value,
 * payload, topic, raw prefix) to iot._ingest_rows(), a single SQL
 * statement that joins them with the registry, quarantines unknown and
 * disabled devices, inserts the rest with INSERT ... SELECT FROM unnest
 * (ON CONFLICT DO NOTHING: a redelivered reading is a duplicate), marks
 * their minute buckets dirty and sets last_seen.  Compared with a row at a
 * time, this parses and plans once per batch and inserts through one
 * executor run (bench/iot.sh measures it against COPY).
 *
 * Callers: the bridge (bridge.c) and iot.ingest (bv_iot.c), inside a
 * transaction with SPI connected.  Plans are prepared once per backend and
 * kept (SPI_keepplan); an error propagates to the caller, which decides
 * (the bridge retries message by message, see bridge.c).
 *
 * Memory: the arrays are built in the batch's context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "bv_iot.h"

static SPIPlanPtr ingest_plan = NULL;
static SPIPlanPtr quarantine_plan = NULL;

static Datum
make_array(Datum *elems, bool *nulls, int n, Oid type)
{
	int dims[1] = {n};
	int lbs[1] = {1};
	int16 typlen;
	bool typbyval;
	char typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, type, typlen, typbyval,
											  typalign));
}

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr p = SPI_prepare(sql, nargs, types);

	if (p == NULL)
		elog(ERROR, "bv_iot: cannot prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(p);
	return p;
}

/*
 * iot_batch_write
 *		Write the batch's readings and refusals; source is "mqtt" or "sql";
 *		owner, when not NULL, limits the readings to that owner's devices.
 */
IotFlushResult
iot_batch_write(IotBatch *b, const char *source, const char *owner)
{
	IotFlushResult r = {0, 0};
	MemoryContext old = MemoryContextSwitchTo(b->cxt);

	if (b->n > 0)
	{
		Datum args[9];
		char nulls[9];
		int rc;

		if (ingest_plan == NULL)
		{
			Oid t[9] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, JSONBARRAYOID,
						TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID};

			ingest_plan = prepare("SELECT inserted, quarantined FROM iot._ingest_rows($1, $2, $3, $4, $5, "
								  "$6, $7, $8, $9)",
								  9, t);
		}
		args[0] = make_array(b->device, NULL, b->n, TEXTOID);
		args[1] = make_array(b->ts, NULL, b->n, TIMESTAMPTZOID);
		args[2] = make_array(b->metric, NULL, b->n, TEXTOID);
		args[3] = make_array(b->value, b->value_null, b->n, FLOAT8OID);
		args[4] = make_array(b->payload, b->payload_null, b->n, JSONBOID);
		args[5] = make_array(b->topic, b->topic_null, b->n, TEXTOID);
		args[6] = make_array(b->raw, NULL, b->n, TEXTOID);
		args[7] = CStringGetTextDatum(source);
		args[8] = owner ? CStringGetTextDatum(owner) : (Datum) 0;
		memset(nulls, ' ', sizeof(nulls));
		if (owner == NULL)
			nulls[8] = 'n';
		rc = SPI_execute_plan(ingest_plan, args, nulls, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "bv_iot: iot._ingest_rows failed: %s", SPI_result_code_string(rc));
		{
			bool isnull;

			r.inserted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			r.quarantined = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
	}
	if (b->nq > 0)
	{
		Datum args[7];
		char nulls[7];
		int rc;

		if (quarantine_plan == NULL)
		{
			Oid t[7] = {TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
						INT4ARRAYOID};

			quarantine_plan = prepare("SELECT iot._quarantine($1, $2, $3, $4, $5, $6, $7)", 7, t);
		}
		args[0] = CStringGetTextDatum(source);
		args[1] = make_array(b->q_topic, b->q_topic_null, b->nq, TEXTOID);
		args[2] = make_array(b->q_device, b->q_device_null, b->nq, TEXTOID);
		args[3] = make_array(b->q_reason, NULL, b->nq, TEXTOID);
		args[4] = make_array(b->q_detail, NULL, b->nq, TEXTOID);
		args[5] = make_array(b->q_raw, NULL, b->nq, TEXTOID);
		args[6] = make_array(b->q_bytes, NULL, b->nq, INT4OID);
		memset(nulls, ' ', sizeof(nulls));
		rc = SPI_execute_plan(quarantine_plan, args, nulls, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "bv_iot: iot._quarantine failed: %s", SPI_result_code_string(rc));
		r.quarantined += b->nq;
	}
	MemoryContextSwitchTo(old);
	return r;
}
