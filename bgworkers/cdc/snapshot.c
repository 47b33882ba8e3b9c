/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  bv_cdc.snapshot(tbl): existing rows as "r" events, chunk by chunk,
 *	  while streaming goes on (watermarks, as DBLog / Debezium's incremental
 *	  snapshots).
 *
 * A request is a row of bv_cdc.snapshots.  The worker takes one chunk at a
 * time, in primary key order, in one transaction of its own:
 *
 *   1. write a low watermark  (non-transactional decoding message
 *      "bv.watermark" = "L:<job>:<token>"),
 *   2. SELECT the next chunk_size rows after the chunk's start key,
 *   3. write a high watermark ("H:<job>:<token>").
 *
 * The rows are kept in memory.  Every change to a key of the chunk that the
 * stream delivers after the chunk was read and before its high watermark
 * removes that key from the buffer: the streamed change wins.  This covers
 * changes committed between the watermarks (possibly newer than the SELECT
 * saw) and also changes committed just before the low watermark but after
 * the SELECT's snapshot, which the SELECT did not see: the worker reads them
 * from the stream only after the chunk's batch, and a change it reads there
 * is never older than the row the SELECT returned.  At the high watermark the remaining rows are produced as
 * "r" events, in an entry of the in-flight window of their own (stream.c),
 * so they are ordered correctly against the stream on every partition.
 *
 * Resumability: the start key of the next chunk is written to
 * bv_cdc.snapshots only once the chunk's events are acknowledged (the slot
 * passed the high watermark), and the next chunk starts only then.  After a
 * crash the job resumes from its recorded key: a chunk may be produced twice,
 * never skipped.  Watermarks replayed from the slot after a restart carry an
 * old token and are ignored.
 *
 * Values are the columns' text output classified the way wal2json does
 * (numbers unquoted, booleans, bytea as hex without \x, NaN/Infinity as
 * null), read with DateStyle ISO and TimeZone UTC like the stream, so "r"
 * events look exactly like "c" events.
 *
 * Memory: the job and its chunk live in "bv_cdc snapshot", reset when the
 * job or the chunk changes.  Only the worker runs this.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "cdc.h"

typedef struct SnapJob
{
	bool active;
	int64 id;
	char *schema;
	char *table;
	int chunk_size;
	int ncols;
	char **cols;
	Oid *coltypes;
	int npk;
	int *pkidx;      /* indexes into cols */
	List *start_key; /* text values of the last row done, NIL = from the start */
	/* the chunk in progress */
	bool chunk_open; /* watermarks written, high not yet seen */
	bool low_seen;
	bool waiting_ack;
	XLogRecPtr high_lsn;
	char token[32];
	int nrows;
	W2jColumn **rows;
	char **keys;
	bool *dropped;
	List *next_key;
	MemoryContext cxt;
	MemoryContext chunk_cxt;
} SnapJob;

static SnapJob job;
static MemoryContext snap_cxt = NULL;
static TimestampTz last_check = 0;
static uint64 checked_generation = 0;

/* Forget the in-memory state; the job is read again from its table. */
void
cdc_snapshot_reset(void)
{
	if (snap_cxt == NULL)
		snap_cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc snapshot",
										 ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(snap_cxt);
	memset(&job, 0, sizeof(job));
	last_check = 0;
	checked_generation = 0;
}

/* Load the oldest pending or running job, with its table's columns. */
static void
load_job(void)
{
	MemoryContext old;
	bool isnull;
	Oid relid;
	uint64 i;

	cdc_begin_batch("bv_cdc: snapshot");
	if (SPI_execute("SELECT id, relid::oid, chunk_size, last_key FROM bv_cdc.snapshots "
					"WHERE status IN ('pending', 'running') ORDER BY id LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bv_cdc.snapshots");
	if (SPI_processed == 0)
	{
		cdc_end_batch();
		return;
	}
	old = MemoryContextSwitchTo(snap_cxt);
	job.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	job.chunk_size =
		DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	{
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);

		job.start_key = cdc_text_array_to_list(d, isnull, true);
	}
	MemoryContextSwitchTo(old);

	{
		Oid argtypes[1] = {OIDOID};
		Datum args[1] = {ObjectIdGetDatum(relid)};

		if (SPI_execute_with_args(
				"SELECT a.attname::text, a.atttypid, n.nspname::text, c.relname::text, "
				"coalesce((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY k(att, n) "
				"WHERE k.att = a.attnum), 0)::int AS pkpos "
				"FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
				"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
				"LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary "
				"WHERE c.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
				1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the columns of the snapshot table");
	}
	old = MemoryContextSwitchTo(snap_cxt);
	job.ncols = (int) SPI_processed;
	job.cols = palloc0(sizeof(char *) * Max(job.ncols, 1));
	job.coltypes = palloc0(sizeof(Oid) * Max(job.ncols, 1));
	job.pkidx = palloc0(sizeof(int) * Max(job.ncols, 1));
	job.npk = 0;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple t = SPI_tuptable->vals[i];
		TupleDesc td = SPI_tuptable->tupdesc;
		int pkpos;

		job.cols[i] = SPI_getvalue(t, td, 1);
		job.coltypes[i] = DatumGetObjectId(SPI_getbinval(t, td, 2, &isnull));
		if (i == 0)
		{
			job.schema = SPI_getvalue(t, td, 3);
			job.table = SPI_getvalue(t, td, 4);
		}
		pkpos = DatumGetInt32(SPI_getbinval(t, td, 5, &isnull));
		if (pkpos > 0)
		{
			job.pkidx[pkpos - 1] = (int) i;
			job.npk = Max(job.npk, pkpos);
		}
	}
	MemoryContextSwitchTo(old);

	if (job.ncols == 0 || job.npk == 0)
	{
		Oid argtypes[1] = {INT8OID};
		Datum args[1] = {Int64GetDatum(job.id)};

		SPI_execute_with_args("UPDATE bv_cdc.snapshots SET status = 'failed', finished_at = now(), "
							  "error = 'the table no longer exists or has no primary key' "
							  "WHERE id = $1",
							  1, argtypes, args, NULL, false, 0);
		cdc_end_batch();
		memset(&job, 0, sizeof(job));
		return;
	}
	{
		Oid argtypes[1] = {INT8OID};
		Datum args[1] = {Int64GetDatum(job.id)};

		SPI_execute_with_args("UPDATE bv_cdc.snapshots SET status = 'running' WHERE id = $1", 1,
							  argtypes, args, NULL, false, 0);
	}
	cdc_end_batch();
	job.chunk_cxt = AllocSetContextCreate(snap_cxt, "bv_cdc snapshot chunk", ALLOCSET_DEFAULT_SIZES);
	job.active = true;
	ereport(LOG, (errmsg("bv_cdc: snapshot %lld of %s.%s starts", (long long) job.id, job.schema,
						 job.table)));
}

/* Classify a column's text output the way wal2json writes it. */
static void
set_value(W2jColumn *c, Oid type, char *text)
{
	c->value = text;
	if (text == NULL)
	{
		c->vtype = JSON_TOKEN_NULL;
		return;
	}
	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			if (pg_strncasecmp(text, "NaN", 3) == 0 || pg_strncasecmp(text, "Infinity", 8) == 0 ||
				pg_strncasecmp(text, "-Infinity", 9) == 0)
				c->vtype = JSON_TOKEN_NULL;
			else
				c->vtype = JSON_TOKEN_NUMBER;
			break;
		case BOOLOID:
			c->vtype = strcmp(text, "t") == 0 ? JSON_TOKEN_TRUE : JSON_TOKEN_FALSE;
			c->value = pstrdup(strcmp(text, "t") == 0 ? "true" : "false");
			break;
		case BYTEAOID:
			c->vtype = JSON_TOKEN_STRING;
			c->value = text + 2; /* after \x */
			break;
		default:
			c->vtype = JSON_TOKEN_STRING;
			break;
	}
}

/* The fake message that names the job's table and key, for envelopes. */
static void
job_message(W2jMessage *m)
{
	int i;

	memset(m, 0, sizeof(*m));
	m->action = 'I';
	m->xid = 0;
	m->schema = job.schema;
	m->table = job.table;
	m->npk = job.npk;
	m->pk = palloc0(sizeof(W2jColumn) * job.npk);
	for (i = 0; i < job.npk; i++)
		m->pk[i].name = job.cols[job.pkidx[i]];
}

/* Write the watermarks around the next chunk's SELECT. */
static void
start_chunk(void)
{
	StringInfoData q, wm;
	Oid *argtypes;
	Datum *args;
	int i;
	uint64 r;
	ListCell *lc;
	MemoryContext old;
	W2jMessage m;

	MemoryContextReset(job.chunk_cxt);
	snprintf(job.token, sizeof(job.token), "%lld:" INT64_FORMAT, (long long) job.id,
			 (int64) GetCurrentTimestamp());
	job.low_seen = false;
	job.waiting_ack = false;
	job.nrows = 0;

	/* In the transaction already: format_type_be reads the catalog. */
	cdc_begin_batch("bv_cdc: snapshot");
	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT ");
	for (i = 0; i < job.ncols; i++)
		appendStringInfo(&q, "%s%s::text", i ? ", " : "", quote_identifier(job.cols[i]));
	appendStringInfo(&q, " FROM %s.%s", quote_identifier(job.schema), quote_identifier(job.table));
	argtypes = palloc(sizeof(Oid) * job.npk);
	args = palloc(sizeof(Datum) * job.npk);
	if (job.start_key != NIL)
	{
		appendStringInfoString(&q, " WHERE (");
		for (i = 0; i < job.npk; i++)
			appendStringInfo(&q, "%s%s", i ? ", " : "", quote_identifier(job.cols[job.pkidx[i]]));
		appendStringInfoString(&q, ") > (");
		i = 0;
		foreach (lc, job.start_key)
		{
			appendStringInfo(&q, "%s$%d::text::%s", i ? ", " : "", i + 1,
							 format_type_be(job.coltypes[job.pkidx[i]]));
			argtypes[i] = TEXTOID;
			args[i] = CStringGetTextDatum((char *) lfirst(lc));
			i++;
		}
		appendStringInfoChar(&q, ')');
	}
	appendStringInfoString(&q, " ORDER BY ");
	for (i = 0; i < job.npk; i++)
		appendStringInfo(&q, "%s%s", i ? ", " : "", quote_identifier(job.cols[job.pkidx[i]]));
	appendStringInfo(&q, " LIMIT %d", job.chunk_size);

	SPI_execute("SET LOCAL datestyle = 'ISO'", false, 0);
	SPI_execute("SET LOCAL timezone = 'UTC'", false, 0);
	initStringInfo(&wm);
	appendStringInfo(&wm,
					 "SELECT pg_catalog.pg_logical_emit_message(false, 'bv.watermark', 'L:%s')",
					 job.token);
	if (SPI_execute(wm.data, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not write the low watermark");
	/* Not read-only: a fresh snapshot, taken after the low watermark. */
	if (SPI_execute_with_args(q.data, job.start_key != NIL ? job.npk : 0, argtypes, args, NULL,
							  false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read a snapshot chunk of %s.%s", job.schema, job.table);

	old = MemoryContextSwitchTo(job.chunk_cxt);
	job.nrows = (int) SPI_processed;
	job.rows = palloc0(sizeof(W2jColumn *) * Max(job.nrows, 1));
	job.keys = palloc0(sizeof(char *) * Max(job.nrows, 1));
	job.dropped = palloc0(sizeof(bool) * Max(job.nrows, 1));
	job_message(&m);
	for (r = 0; r < SPI_processed; r++)
	{
		StringInfoData key;

		job.rows[r] = palloc0(sizeof(W2jColumn) * job.ncols);
		for (i = 0; i < job.ncols; i++)
		{
			job.rows[r][i].name = job.cols[i];
			set_value(&job.rows[r][i], job.coltypes[i],
					  SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, i + 1));
		}
		initStringInfo(&key);
		cdc_build_key(&key, &m, job.rows[r], job.ncols);
		job.keys[r] = key.data;
	}
	job.next_key = NIL;
	if (job.nrows > 0)
		for (i = 0; i < job.npk; i++)
			job.next_key = lappend(job.next_key,
								   SPI_getvalue(SPI_tuptable->vals[job.nrows - 1],
												SPI_tuptable->tupdesc, job.pkidx[i] + 1));
	MemoryContextSwitchTo(old);

	resetStringInfo(&wm);
	appendStringInfo(&wm,
					 "SELECT pg_catalog.pg_logical_emit_message(false, 'bv.watermark', 'H:%s')",
					 job.token);
	if (SPI_execute(wm.data, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not write the high watermark");
	cdc_end_batch();
	job.chunk_open = true;
}

/* The chunk is acknowledged: record progress; finish when it was empty. */
static void
finish_chunk(void)
{
	Oid argtypes[3] = {INT8OID, TEXTARRAYOID, INT8OID};
	Datum args[3];
	bool done = job.nrows == 0;
	int kept = 0;
	int i;

	for (i = 0; i < job.nrows; i++)
		kept += job.dropped[i] ? 0 : 1;
	cdc_begin_batch("bv_cdc: snapshot");
	args[0] = Int64GetDatum(job.id);
	if (done)
	{
		SPI_execute_with_args("UPDATE bv_cdc.snapshots SET status = 'done', finished_at = now() "
							  "WHERE id = $1",
							  1, argtypes, args, NULL, false, 0);
	}
	else
	{
		Datum *elems = palloc(sizeof(Datum) * job.npk);
		ListCell *lc;

		i = 0;
		foreach (lc, job.next_key)
			elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
		args[1] = PointerGetDatum(construct_array(elems, job.npk, TEXTOID, -1, false, TYPALIGN_INT));
		args[2] = Int64GetDatum((int64) kept);
		SPI_execute_with_args("UPDATE bv_cdc.snapshots SET last_key = $2, rows = rows + $3 "
							  "WHERE id = $1",
							  3, argtypes, args, NULL, false, 0);
	}
	cdc_end_batch();
	if (done)
	{
		ereport(LOG, (errmsg("bv_cdc: snapshot %lld of %s.%s is done", (long long) job.id,
							 job.schema, job.table)));
		MemoryContextReset(snap_cxt);
		memset(&job, 0, sizeof(job));
		last_check = 0;
		return;
	}
	{
		MemoryContext old = MemoryContextSwitchTo(snap_cxt);
		List *copy = NIL;
		ListCell *lc;

		foreach (lc, job.next_key)
			copy = lappend(copy, pstrdup((char *) lfirst(lc)));
		job.start_key = copy;
		MemoryContextSwitchTo(old);
	}
	job.chunk_open = false;
	job.waiting_ack = false;
}

/*
 * cdc_snapshot_step
 *		Between messages: pick up a job, record an acknowledged chunk, start
 *		the next one.  flushed is the slot's confirmed position.
 */
void
cdc_snapshot_step(XLogRecPtr flushed)
{
	uint64 gen;

	if (snap_cxt == NULL)
		cdc_snapshot_reset();
	if (!job.active)
	{
		gen = pg_atomic_read_u64(&cdc_shared->config_generation);
		if (gen == checked_generation &&
			!TimestampDifferenceExceeds(last_check, GetCurrentTimestamp(), cdc_heartbeat_interval_ms))
			return;
		checked_generation = gen;
		last_check = GetCurrentTimestamp();
		load_job();
		if (!job.active)
			return;
	}
	if (job.waiting_ack)
	{
		if (flushed < job.high_lsn)
			return;
		finish_chunk();
		if (!job.active)
			return;
	}
	if (!job.chunk_open)
		start_chunk();
}

/*
 * cdc_snapshot_watermark
 *		A watermark read from the stream.  Returns true at the high
 *		watermark of the open chunk: the caller then produces the rows from
 *		cdc_snapshot_rows().
 */
bool
cdc_snapshot_watermark(const char *content, XLogRecPtr lsn)
{
	if (!job.active || !job.chunk_open || content == NULL || strlen(content) < 2 ||
		strcmp(content + 2, job.token) != 0)
		return false; /* a stale one, replayed after a restart */
	if (content[0] == 'L')
	{
		job.low_seen = true;
		return false;
	}
	if (content[0] != 'H' || !job.low_seen || job.waiting_ack)
		return false;
	job.waiting_ack = true;
	job.high_lsn = lsn;
	return true;
}

/*
 * A streamed change read while the chunk is open (up to its high watermark)
 * supersedes the chunk's row for that key (see the file header for why the
 * low watermark is not required).
 */
void
cdc_snapshot_on_change(const W2jMessage *m)
{
	StringInfoData key;
	const W2jColumn *cols[2];
	int ncols[2];
	int k, r;

	if (!job.active || !job.chunk_open || job.waiting_ack || job.nrows == 0 ||
		strcmp(m->schema, job.schema) != 0 || strcmp(m->table, job.table) != 0)
		return;
	cols[0] = m->columns;
	ncols[0] = m->ncolumns;
	cols[1] = m->identity;
	ncols[1] = m->nidentity;
	initStringInfo(&key);
	for (k = 0; k < 2; k++)
	{
		resetStringInfo(&key);
		if (cols[k] == NULL || !cdc_build_key(&key, m, cols[k], ncols[k]))
			continue;
		for (r = 0; r < job.nrows; r++)
			if (!job.dropped[r] && strcmp(job.keys[r], key.data) == 0)
				job.dropped[r] = true;
	}
}

/* The open chunk's rows (dropped ones flagged) and a message naming them. */
int
cdc_snapshot_rows(W2jColumn ***rows, bool **dropped, int *ncols, W2jMessage *m)
{
	*rows = job.rows;
	*dropped = job.dropped;
	*ncols = job.ncols;
	job_message(m);
	return job.nrows;
}
