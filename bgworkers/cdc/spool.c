/*-------------------------------------------------------------------------
 *
 * spool.c
 *	  The webhook sinks' durable spool (bv_cdc.webhook_spool) and their
 *	  dead letters (bv_cdc.dead_letter).
 *
 * A webhook event that cannot be delivered on its first attempt (a retryable
 * failure, an open circuit breaker, a receiver too slow to keep up, or an
 * earlier event of the same key already waiting) is written to the spool;
 * once that transaction has committed, the event counts as delivered for
 * the slot, and retries are the spool's business.  That is what lets one
 * bad receiver fall behind without holding the slot, and so the other
 * sinks, back (docs/adr/0031).
 *
 * Order per key: a key's rows are delivered one at a time in id order: only
 * the oldest row of a key is ever fetched.  The rows of one key also keep
 * non-decreasing next_attempt_at (a retry pushes the later rows of its key
 * along, new rows inherit the key's next attempt), so a key's later rows do
 * not look due while its head waits.  webhook.c writes a key's events to the
 * spool in their order (an event follows its key's earlier ones).
 *
 * All writes of one round (new rows, retries rescheduled, deliveries,
 * parked events) go in one transaction, committed with synchronous_commit
 * on whatever the server's setting: the slot moves past a spooled event only
 * after that commit is durable.
 *
 * Items are malloc'd (they outlive transactions and memory context resets),
 * one block per item with its strings; webhook.c frees them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "webhook.h"

static uint64
wh_key_hash(const char *keystr)
{
	return hash_bytes_extended((const unsigned char *) keystr, (int) strlen(keystr), 0x6276);
}

/* Copy s into the block at *p (NULL stays NULL). */
static char *
place(char **p, const char *s, size_t len)
{
	char *dst = *p;

	if (s == NULL)
		return NULL;
	memcpy(dst, s, len);
	dst[len] = '\0';
	*p += len + 1;
	return dst;
}

/*
 * wh_item_make
 *		One item in one malloc'd block.  NULL when out of memory (the caller
 *		then treats the event as not accepted).
 */
static WhItem *
wh_item_make(uint64 opaque, int64 spool_id, int attempts, TimestampTz first, int64 route_id,
			 bool hold, const char *keystr, const char *event_id, const char *topic,
			 const char *op, const char *table, const char *lsn, const char *traceparent,
			 const char *body, size_t len)
{
	const char *strs[] = {keystr, event_id, topic, op, table, lsn, traceparent};
	size_t lens[lengthof(strs)];
	size_t total = sizeof(WhItem) + len + 1;
	WhItem *it;
	char *p;
	int i;

	for (i = 0; i < lengthof(strs); i++)
	{
		lens[i] = strs[i] ? strlen(strs[i]) : 0;
		total += strs[i] ? lens[i] + 1 : 0;
	}
	it = malloc(total);
	if (it == NULL)
		return NULL;
	memset(it, 0, sizeof(WhItem));
	p = (char *) (it + 1);
	it->opaque = opaque;
	it->spool_id = spool_id;
	it->attempts = attempts;
	it->first_attempt = first;
	it->queued_at = GetCurrentTimestamp();
	it->route_id = route_id;
	it->hold = hold;
	it->keystr = place(&p, keystr, lens[0]);
	it->event_id = place(&p, event_id, lens[1]);
	it->topic = place(&p, topic ? topic : "", topic ? lens[2] : 0);
	it->op = place(&p, op ? op : "", op ? lens[3] : 0);
	it->table = place(&p, table ? table : "", table ? lens[4] : 0);
	it->lsn = place(&p, lsn ? lsn : "0/0", lsn ? lens[5] : 3);
	it->traceparent = place(&p, traceparent, lens[6]);
	it->body = place(&p, body, len);
	it->len = len;
	it->keyhash = wh_key_hash(it->keystr);
	return it;
}

/* An item for an event of the stream. */
WhItem *
wh_item_new(const CdcEvent *ev, const char *keystr)
{
	return wh_item_make(ev->opaque, 0, 0, 0, ev->route->id, ev->route->hold_key, keystr,
						ev->event_id, ev->topic, ev->h->op, ev->h->table, ev->h->lsn,
						ev->h->traceparent, ev->payload, ev->len);
}

static Datum
text_or_null(const char *s, char *nulls, int i)
{
	if (s == NULL)
	{
		nulls[i] = 'n';
		return (Datum) 0;
	}
	nulls[i] = ' ';
	return CStringGetTextDatum(s);
}

static Datum
ts_or_null(TimestampTz ts, char *nulls, int i)
{
	nulls[i] = ts == 0 ? 'n' : ' ';
	return TimestampTzGetDatum(ts);
}

#define SPOOL_COLS 17

/* The parameters shared by the INSERTs into the spool and the dead letters. */
static void
row_args(const char *sink, const WhItem *it, Datum *v, char *n)
{
	int i = 0;

	v[i] = text_or_null(sink, n, i), i++;
	v[i] = Int64GetDatum(it->route_id), n[i++] = ' ';
	v[i] = text_or_null(it->event_id, n, i), i++;
	v[i] = text_or_null(it->keystr, n, i), i++;
	v[i] = text_or_null(it->topic, n, i), i++;
	v[i] = text_or_null(it->op, n, i), i++;
	v[i] = text_or_null(it->table, n, i), i++;
	v[i] = text_or_null(it->lsn, n, i), i++;
	v[i] = text_or_null(it->traceparent, n, i), i++;
	v[i] = BoolGetDatum(it->hold), n[i++] = ' ';
	v[i] = PointerGetDatum(cstring_to_text_with_len(it->body, (int) it->len)), n[i++] = ' ';
	v[i] = Int32GetDatum(it->attempts), n[i++] = ' ';
	v[i] = ts_or_null(it->first_attempt, n, i), i++;
	v[i] = ts_or_null(it->attempts > 0 ? GetCurrentTimestamp() : 0, n, i), i++;
	v[i] = TimestampTzGetDatum(it->next_attempt ? it->next_attempt : GetCurrentTimestamp()),
	n[i++] = ' ';
	v[i] = Int32GetDatum(it->status), n[i] = it->status ? ' ' : 'n', i++;
	v[i] = text_or_null(it->error[0] ? it->error : NULL, n, i), i++;
	Assert(i == SPOOL_COLS);
}

static const Oid row_types[SPOOL_COLS] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
										  TEXTOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, INT4OID,
										  TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID,
										  TEXTOID};

#define ROW_COLUMNS                                                                           \
	"sink, route_id, event_id, key, topic, op, tbl, lsn, traceparent, hold, body, attempts, " \
	"first_attempt_at, last_attempt_at, "
#define ROW_VALUES "$1, $2, $3, $4, $5, $6, $7, $8::pg_lsn, $9, $10, $11, $12, $13, $14, "

static SPIPlanPtr plan_insert_spool = NULL;
static SPIPlanPtr plan_insert_dead = NULL;
static SPIPlanPtr plan_move_dead = NULL;
static SPIPlanPtr plan_update = NULL;
static SPIPlanPtr plan_delete = NULL;
static SPIPlanPtr plan_hold_key = NULL;

static SPIPlanPtr
keep(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr p = SPI_prepare(sql, nargs, (Oid *) types);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*slot = p;
	}
	return *slot;
}

static void
exec_plan(SPIPlanPtr plan, Datum *v, char *n, int expect)
{
	int rc = SPI_execute_plan(plan, v, n, false, 0);

	if (rc != expect)
		elog(ERROR, "bv_cdc spool statement failed: %s", SPI_result_code_string(rc));
}

static void
flush_rows(const char *sink, WhSpoolOps *ops)
{
	dlist_iter it;

	dlist_foreach(it, &ops->to_spool)
	{
		WhItem *w = wh_item_of(it.cur);
		Datum v[SPOOL_COLS];
		char n[SPOOL_COLS];

		row_args(sink, w, v, n);
		exec_plan(keep(&plan_insert_spool,
					   "INSERT INTO bv_cdc.webhook_spool (" ROW_COLUMNS
					   "next_attempt_at, last_status, last_error) VALUES (" ROW_VALUES
					   "$15, $16, $17)",
					   SPOOL_COLS, row_types),
				  v, n, SPI_OK_INSERT);
	}
	dlist_foreach(it, &ops->to_update)
	{
		WhItem *w = wh_item_of(it.cur);
		Oid types[7] = {INT8OID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, TEXTOID,
						TEXTOID};
		Datum v[7];
		char n[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

		v[0] = Int64GetDatum(w->spool_id);
		v[1] = Int32GetDatum(w->attempts);
		v[2] = TimestampTzGetDatum(w->first_attempt);
		v[3] = TimestampTzGetDatum(w->next_attempt);
		v[4] = Int32GetDatum(w->status);
		n[4] = w->status ? ' ' : 'n';
		v[5] = text_or_null(w->error[0] ? w->error : NULL, n, 5);
		v[6] = CStringGetTextDatum(sink);
		/* The key's later rows wait at least as long (order per key). */
		exec_plan(keep(&plan_update,
					   "WITH r AS (UPDATE bv_cdc.webhook_spool SET attempts = $2, "
					   "first_attempt_at = coalesce(first_attempt_at, $3), last_attempt_at = "
					   "pg_catalog.now(), next_attempt_at = $4, last_status = $5, last_error = $6 "
					   "WHERE id = $1 RETURNING key) "
					   "UPDATE bv_cdc.webhook_spool s SET next_attempt_at = $4 FROM r "
					   "WHERE s.sink = $7 AND s.key = r.key AND s.id > $1 AND s.next_attempt_at < $4",
					   7, types),
				  v, n, SPI_OK_UPDATE);
	}
	dlist_foreach(it, &ops->to_delete)
	{
		WhItem *w = wh_item_of(it.cur);
		Oid types[1] = {INT8OID};
		Datum v[1] = {Int64GetDatum(w->spool_id)};

		exec_plan(keep(&plan_delete, "DELETE FROM bv_cdc.webhook_spool WHERE id = $1", 1, types),
				  v, NULL, SPI_OK_DELETE);
	}
	dlist_foreach(it, &ops->to_dead)
	{
		WhItem *w = wh_item_of(it.cur);
		Datum v[SPOOL_COLS + 2];
		char n[SPOOL_COLS + 2];
		Oid types[SPOOL_COLS + 2];

		memcpy(types, row_types, sizeof(row_types));
		types[SPOOL_COLS] = TEXTOID;
		types[SPOOL_COLS + 1] = INT8OID;
		row_args(sink, w, v, n);
		v[SPOOL_COLS] = CStringGetTextDatum(w->dead_reason ? w->dead_reason : WH_DEAD_PERMANENT);
		n[SPOOL_COLS] = ' ';
		v[SPOOL_COLS + 1] = Int64GetDatum(w->spool_id);
		n[SPOOL_COLS + 1] = ' ';
		if (w->spool_id > 0)
			exec_plan(keep(&plan_move_dead,
						   "WITH d AS (DELETE FROM bv_cdc.webhook_spool WHERE id = $19 RETURNING "
						   "first_attempt_at, spooled_at) "
						   "INSERT INTO bv_cdc.dead_letter (" ROW_COLUMNS
						   "last_status, last_error, reason) SELECT " ROW_VALUES
						   "$16, $17, $18 FROM d",
						   SPOOL_COLS + 2, types),
					  v, n, SPI_OK_INSERT);
		else
			exec_plan(keep(&plan_insert_dead,
						   "INSERT INTO bv_cdc.dead_letter (" ROW_COLUMNS
						   "last_status, last_error, reason) VALUES (" ROW_VALUES
						   "$16, $17, $18) /* $15 $19 */",
						   SPOOL_COLS + 2, types),
					  v, n, SPI_OK_INSERT);
		if (w->move_key_rows)
		{
			Oid ktypes[2] = {TEXTOID, TEXTOID};
			Datum kv[2] = {CStringGetTextDatum(sink), CStringGetTextDatum(w->keystr)};

			/* Held behind it, in their order: the key's rows still in the spool. */
			exec_plan(keep(&plan_hold_key,
						   "WITH d AS (DELETE FROM bv_cdc.webhook_spool WHERE sink = $1 AND key = $2 "
						   "RETURNING *) INSERT INTO bv_cdc.dead_letter (" ROW_COLUMNS
						   "last_status, last_error, reason) SELECT sink, route_id, event_id, key, "
						   "topic, op, tbl, lsn, traceparent, hold, body, attempts, "
						   "first_attempt_at, last_attempt_at, last_status, last_error, 'held' "
						   "FROM d ORDER BY id",
						   2, ktypes),
					  kv, NULL, SPI_OK_INSERT);
		}
	}
}

/*
 * wh_spool_flush
 *		Write one round's rows in one durable transaction.  false (with the
 *		reason, the transaction rolled back, the lists untouched) on error:
 *		the caller keeps the events and tries again later.
 */
bool
wh_spool_flush(const char *sink, WhSpoolOps *ops, char *errbuf, size_t errlen)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile bool ok = true;

	if (ops->n == 0)
		return true;
	PG_TRY();
	{
		cdc_begin_batch("bv_cdc: webhook spool");
		SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION);
		flush_rows(sink, ops);
		cdc_end_batch();
	}
	PG_CATCH();
	{
		snprintf(errbuf, errlen, "spool: %s", cdc_batch_failed(outer));
		/* Plans of a failed transaction may be stale: prepare them again. */
		plan_insert_spool = plan_insert_dead = plan_move_dead = plan_update = plan_delete =
			plan_hold_key = NULL;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return ok;
}

/*
 * wh_spool_fetch
 *		Up to limit due rows of the sink, oldest first, appended to out as
 *		items; returns how many.  *next_due is when the earliest row not yet
 *		due will be (0 when the spool is empty).  -1 on error (logged).
 */
int
wh_spool_fetch(const char *sink, int limit, dlist_head *out, TimestampTz *next_due)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile int n = 0;

	*next_due = 0;
	PG_TRY();
	{
		Oid types[2] = {TEXTOID, INT4OID};
		Datum args[2];
		uint64 i;
		bool isnull;
		Datum d;

		cdc_begin_batch("bv_cdc: webhook spool");
		args[0] = CStringGetTextDatum(sink);
		args[1] = Int32GetDatum(limit);
		if (SPI_execute_with_args(
				"SELECT id, route_id, event_id, key, topic, op, tbl, lsn::text, traceparent, hold, "
				"body, attempts, first_attempt_at FROM bv_cdc.webhook_spool s "
				"WHERE sink = $1 AND next_attempt_at <= pg_catalog.now() "
				"AND NOT EXISTS (SELECT 1 FROM bv_cdc.webhook_spool e "
				"WHERE e.sink = s.sink AND e.key = s.key AND e.id < s.id) "
				"ORDER BY id LIMIT $2",
				2, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read bv_cdc.webhook_spool");
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple t = SPI_tuptable->vals[i];
			TupleDesc td = SPI_tuptable->tupdesc;
			text *body = DatumGetTextPP(SPI_getbinval(t, td, 11, &isnull));
			Datum first = SPI_getbinval(t, td, 13, &isnull);
			WhItem *w = wh_item_make(
				0, DatumGetInt64(SPI_getbinval(t, td, 1, &isnull)),
				DatumGetInt32(SPI_getbinval(t, td, 12, &isnull)),
				isnull ? 0 : DatumGetTimestampTz(first),
				DatumGetInt64(SPI_getbinval(t, td, 2, &isnull)),
				DatumGetBool(SPI_getbinval(t, td, 10, &isnull)), SPI_getvalue(t, td, 4),
				SPI_getvalue(t, td, 3), SPI_getvalue(t, td, 5), SPI_getvalue(t, td, 6),
				SPI_getvalue(t, td, 7), SPI_getvalue(t, td, 8), SPI_getvalue(t, td, 9),
				VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body));

			if (w == NULL)
				break;
			dlist_push_tail(out, &w->node);
			n++;
		}
		if (SPI_execute_with_args("SELECT min(next_attempt_at) FROM bv_cdc.webhook_spool "
								  "WHERE sink = $1 AND next_attempt_at > pg_catalog.now()",
								  1, types, args, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (!isnull)
				*next_due = DatumGetTimestampTz(d);
		}
		cdc_end_batch();
	}
	PG_CATCH();
	{
		ereport(WARNING, (errmsg("bv_cdc could not read the webhook spool of sink \"%s\": %s",
								 sink, cdc_batch_failed(outer))));
		n = -1;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return n;
}

/*
 * wh_spool_load_keys
 *		The keys with rows in the spool (count, latest next attempt) or held
 *		by a parked event, into keys; the number of spooled rows in *spooled.
 *		false on error (logged).
 */
bool
wh_spool_load_keys(const char *sink, HTAB *keys, int64 *spooled)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile bool ok = true;

	*spooled = 0;
	PG_TRY();
	{
		Oid types[1] = {TEXTOID};
		Datum args[1];
		uint64 i;
		bool isnull, found;

		cdc_begin_batch("bv_cdc: webhook spool");
		args[0] = CStringGetTextDatum(sink);
		if (SPI_execute_with_args("SELECT key, count(*), max(next_attempt_at) "
								  "FROM bv_cdc.webhook_spool WHERE sink = $1 GROUP BY key",
								  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read bv_cdc.webhook_spool");
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple t = SPI_tuptable->vals[i];
			TupleDesc td = SPI_tuptable->tupdesc;
			uint64 h = wh_key_hash(SPI_getvalue(t, td, 1));
			WhKey *k = hash_search(keys, &h, HASH_ENTER, &found);

			if (!found)
				memset(((char *) k) + sizeof(uint64), 0, sizeof(WhKey) - sizeof(uint64));
			k->spooled += (int) DatumGetInt64(SPI_getbinval(t, td, 2, &isnull));
			k->next_attempt = DatumGetTimestampTz(SPI_getbinval(t, td, 3, &isnull));
			*spooled += DatumGetInt64(SPI_getbinval(t, td, 2, &isnull));
		}
		if (SPI_execute_with_args("SELECT DISTINCT key FROM bv_cdc.dead_letter "
								  "WHERE sink = $1 AND hold",
								  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read bv_cdc.dead_letter");
		for (i = 0; i < SPI_processed; i++)
		{
			uint64 h = wh_key_hash(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
			WhKey *k = hash_search(keys, &h, HASH_ENTER, &found);

			if (!found)
				memset(((char *) k) + sizeof(uint64), 0, sizeof(WhKey) - sizeof(uint64));
			k->held = true;
		}
		cdc_end_batch();
	}
	PG_CATCH();
	{
		ereport(WARNING, (errmsg("bv_cdc could not read the webhook spool of sink \"%s\": %s",
								 sink, cdc_batch_failed(outer))));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return ok;
}
