/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Writes a batch of validated readings and refusals: one statement for
 *	  the readings, one for the quarantine, whatever the batch's size.
 *
 * Per batch, whatever its size: one query looks up the batch's distinct
 * devices (unknown and disabled ones are quarantined here); one
 * INSERT ... SELECT FROM unnest($1..$5) inserts the readings as parallel
 * arrays; one statement marks the distinct minute buckets dirty (computed
 * here, so the rollups see late readings); one sets last_seen of the
 * distinct devices; one writes the quarantine.  Compared with a row at a
 * time this plans once and inserts through one executor run
 * (bench/iot.sh measures it against COPY).
 *
 * Exactly once: iot.telemetry has one row per (device, metric, ts).  The
 * plain INSERT runs in a subtransaction; when it hits a duplicate (a
 * message the broker redelivered because its PUBACK never left), the
 * batch is inserted again with ON CONFLICT DO NOTHING, which is about
 * twice as slow and so is not the first try.
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
#include "access/xact.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "bv_iot.h"

static SPIPlanPtr devices_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_dedup_plan = NULL;
static SPIPlanPtr dirty_plan = NULL;
static SPIPlanPtr seen_plan = NULL;
static SPIPlanPtr quarantine_plan = NULL;

/* What the registry says about a device of the batch. */
typedef struct DeviceEntry
{
	char id[IOT_ID_MAX + 1]; /* hash key */
	char reason[16];         /* "" (accepted), unknown_device, disabled_device */
} DeviceEntry;

/* A minute bucket the batch touched. */
typedef struct DirtyKey
{
	char device[IOT_ID_MAX + 1];
	char metric[IOT_ID_MAX + 1];
	TimestampTz minute;
} DirtyKey;

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

static void
prepare_all(void)
{
	Oid t1[1] = {TEXTARRAYOID};
	Oid t5[5] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, JSONBARRAYOID};
	Oid t3[3] = {TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Oid tq[7] = {TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
				 INT4ARRAYOID};

	if (insert_plan != NULL)
		return;
	devices_plan = prepare("SELECT device_id, status, owner FROM iot.devices WHERE device_id = ANY ($1)", 1, t1);
	insert_plan = prepare("INSERT INTO iot.telemetry (device_id, ts, metric, value, payload) "
						  "SELECT * FROM unnest($1, $2, $3, $4, $5)",
						  5, t5);
	insert_dedup_plan = prepare("INSERT INTO iot.telemetry (device_id, ts, metric, value, payload) "
								"SELECT * FROM unnest($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
								5, t5);
	dirty_plan = prepare("INSERT INTO iot.rollup_dirty (device_id, metric, bucket) SELECT * FROM unnest($1, $2, $3)",
						 3, t3);
	seen_plan = prepare("INSERT INTO iot.device_state AS s (device_id, last_seen) "
						"SELECT d, now() FROM unnest($1) d "
						"ON CONFLICT (device_id) DO UPDATE SET last_seen = EXCLUDED.last_seen "
						"WHERE s.last_seen < EXCLUDED.last_seen",
						1, t1);
	quarantine_plan = prepare("SELECT iot._quarantine($1, $2, $3, $4, $5, $6, $7)", 7, tq);
}

/*
 * Look up the batch's devices (one query) and move the readings of
 * unknown, disabled (or, with owner, other owners') devices to the
 * quarantine.  Returns the hash of accepted devices.
 */
static HTAB *
check_devices(IotBatch *b, const char *owner)
{
	HASHCTL ctl;
	HTAB *h;
	Datum *ids = palloc(sizeof(Datum) * b->n);
	int nids = 0;
	int i, j;
	uint64 k;
	Datum arg[1];

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = IOT_ID_MAX + 1;
	ctl.entrysize = sizeof(DeviceEntry);
	ctl.hcxt = CurrentMemoryContext;
	h = hash_create("bv_iot batch devices", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (i = 0; i < b->n; i++)
	{
		char *id = TextDatumGetCString(b->device[i]);
		bool found;
		DeviceEntry *e = hash_search(h, id, HASH_ENTER, &found);

		if (!found)
		{
			strlcpy(e->reason, "unknown_device", sizeof(e->reason));
			ids[nids++] = b->device[i];
		}
	}
	arg[0] = make_array(ids, NULL, nids, TEXTOID);
	if (SPI_execute_plan(devices_plan, arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "bv_iot: device lookup failed");
	for (k = 0; k < SPI_processed; k++)
	{
		char *id = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1);
		char *status = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 2);
		char *own = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 3);
		DeviceEntry *e = hash_search(h, id, HASH_FIND, NULL);

		if (e == NULL || (owner != NULL && strcmp(own, owner) != 0))
			continue;
		strlcpy(e->reason, strcmp(status, "active") == 0 ? "" : "disabled_device", sizeof(e->reason));
	}

	/* Compact the accepted readings; quarantine the others. */
	for (i = 0, j = 0; i < b->n; i++)
	{
		char *id = TextDatumGetCString(b->device[i]);
		DeviceEntry *e = hash_search(h, id, HASH_FIND, NULL);

		if (e->reason[0] != '\0')
		{
			char *raw = TextDatumGetCString(b->raw[i]);

			iot_batch_quarantine(b, b->topic_null[i] ? NULL : TextDatumGetCString(b->topic[i]), id,
								 e->reason,
								 e->reason[0] == 'u' ? "No device with this id is registered."
													 : "The device is disabled.",
								 raw, strlen(raw));
			continue;
		}
		if (i != j)
		{
			b->device[j] = b->device[i];
			b->ts[j] = b->ts[i];
			b->metric[j] = b->metric[i];
			b->value[j] = b->value[i];
			b->value_null[j] = b->value_null[i];
			b->payload[j] = b->payload[i];
			b->payload_null[j] = b->payload_null[i];
			b->topic[j] = b->topic[i];
			b->topic_null[j] = b->topic_null[i];
			b->raw[j] = b->raw[i];
		}
		j++;
	}
	b->n = j;
	return h;
}

/*
 * Insert the accepted readings: a plain multi-row INSERT ... SELECT FROM
 * unnest in a subtransaction; if a reading is already there (a
 * redelivery), the same with ON CONFLICT DO NOTHING, which costs about
 * twice as much and so is only the second try.  Returns the rows landed.
 */
static int64
insert_readings(IotBatch *b)
{
	Datum args[5];
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool duplicate = false;

	args[0] = make_array(b->device, NULL, b->n, TEXTOID);
	args[1] = make_array(b->ts, NULL, b->n, TIMESTAMPTZOID);
	args[2] = make_array(b->metric, NULL, b->n, TEXTOID);
	args[3] = make_array(b->value, b->value_null, b->n, FLOAT8OID);
	args[4] = make_array(b->payload, b->payload_null, b->n, JSONBOID);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_execute_plan(insert_plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "bv_iot: insert failed");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		if (e->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		duplicate = true;
	}
	PG_END_TRY();
	if (!duplicate)
		return b->n;
	if (SPI_execute_plan(insert_dedup_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "bv_iot: insert failed");
	return (int64) SPI_processed;
}

/* Mark the touched minute buckets dirty and set last_seen (one statement each). */
static void
mark_dirty_and_seen(IotBatch *b, HTAB *devices)
{
	HASHCTL ctl;
	HTAB *h;
	HASH_SEQ_STATUS seq;
	DirtyKey *d;
	DeviceEntry *e;
	int n = 0, i;
	Datum *dev, *met, *min, *seen;
	Datum args[3];

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(DirtyKey);
	ctl.entrysize = sizeof(DirtyKey);
	ctl.hcxt = CurrentMemoryContext;
	h = hash_create("bv_iot dirty buckets", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < b->n; i++)
	{
		DirtyKey key;
		text *tm = DatumGetTextPP(b->metric[i]);
		TimestampTz ts = DatumGetTimestampTz(b->ts[i]);

		memset(&key, 0, sizeof(key));
		text_to_cstring_buffer(DatumGetTextPP(b->device[i]), key.device, sizeof(key.device));
		text_to_cstring_buffer(tm, key.metric, sizeof(key.metric));
		key.minute = ts - ((ts % USECS_PER_MINUTE) + USECS_PER_MINUTE) % USECS_PER_MINUTE;
		hash_search(h, &key, HASH_ENTER, NULL);
	}
	n = hash_get_num_entries(h);
	dev = palloc(sizeof(Datum) * n);
	met = palloc(sizeof(Datum) * n);
	min = palloc(sizeof(Datum) * n);
	i = 0;
	hash_seq_init(&seq, h);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		dev[i] = CStringGetTextDatum(d->device);
		met[i] = CStringGetTextDatum(d->metric);
		min[i] = TimestampTzGetDatum(d->minute);
		i++;
	}
	args[0] = make_array(dev, NULL, n, TEXTOID);
	args[1] = make_array(met, NULL, n, TEXTOID);
	args[2] = make_array(min, NULL, n, TIMESTAMPTZOID);
	if (SPI_execute_plan(dirty_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "bv_iot: marking rollup buckets failed");

	seen = palloc(sizeof(Datum) * hash_get_num_entries(devices));
	n = 0;
	hash_seq_init(&seq, devices);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (e->reason[0] == '\0')
			seen[n++] = CStringGetTextDatum(e->id);
	args[0] = make_array(seen, NULL, n, TEXTOID);
	if (SPI_execute_plan(seen_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "bv_iot: updating last_seen failed");
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

	prepare_all();
	if (b->n > 0)
	{
		HTAB *devices = check_devices(b, owner);

		if (b->n > 0)
		{
			r.inserted = insert_readings(b);
			mark_dirty_and_seen(b, devices);
		}
	}
	if (b->nq > 0)
	{
		Datum args[7];
		int rc;

		args[0] = CStringGetTextDatum(source);
		args[1] = make_array(b->q_topic, b->q_topic_null, b->nq, TEXTOID);
		args[2] = make_array(b->q_device, b->q_device_null, b->nq, TEXTOID);
		args[3] = make_array(b->q_reason, NULL, b->nq, TEXTOID);
		args[4] = make_array(b->q_detail, NULL, b->nq, TEXTOID);
		args[5] = make_array(b->q_raw, NULL, b->nq, TEXTOID);
		args[6] = make_array(b->q_bytes, NULL, b->nq, INT4OID);
		rc = SPI_execute_plan(quarantine_plan, args, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "bv_iot: iot._quarantine failed: %s", SPI_result_code_string(rc));
		r.quarantined += b->nq;
	}
	MemoryContextSwitchTo(old);
	return r;
}
