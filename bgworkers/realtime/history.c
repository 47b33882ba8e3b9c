/*-------------------------------------------------------------------------
 *
 * history.c
 *	  The bounded, durable history of broadcast messages, for clients that
 *	  reconnect with their last position.
 *
 * Table bv_realtime.messages holds the messages the gateway decoded, keyed
 * by position (commit_lsn, seq).  The worker inserts each decoded batch in
 * one transaction (ON CONFLICT DO NOTHING: a batch replayed after a crash
 * is already there), commits, and only then delivers the batch and moves
 * the slot.  So at any moment between two steps of the worker's loop the
 * history holds every message delivered so far, and a resuming client
 * reads from it everything after its position; live delivery continues
 * after the history's last position with no gap and no duplicate.
 *
 * Pruning (every few seconds) deletes by age (bv_realtime.history_retention)
 * and count (bv_realtime.history_max_rows) and records the last deleted
 * position in bv_realtime.history_state: a client whose position is before
 * it (or after the last position ever delivered, or malformed) is told to
 * re-sync instead of getting a partial replay.
 *
 * Concurrency: only the worker writes these tables; it keeps the high and
 * low marks in memory (loaded at start-up) as the authority.
 *
 * Memory: saved SPI plans (SPI_keepplan); results are copied into the
 * caller's context before SPI_finish.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"

#include "bv_realtime.h"

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr read_plan = NULL;
static RtPos high = {0, 0}; /* last position stored */
static RtPos low = {0, 0};  /* everything after this is kept */

static void
begin_spi(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_spi(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "bv_realtime could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/* Read the marks (start-up). */
void
rt_history_init(void)
{
	begin_spi();
	if (SPI_execute("SELECT retained_after_lsn, retained_after_seq FROM bv_realtime.history_state",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bv_realtime.history_state");
	if (SPI_processed > 0)
	{
		bool isnull;

		low.lsn = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		low.seq = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	high = low;
	if (SPI_execute("SELECT commit_lsn, seq FROM bv_realtime.messages "
					"ORDER BY commit_lsn DESC, seq DESC LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bv_realtime.messages");
	if (SPI_processed > 0)
	{
		bool isnull;

		high.lsn = DatumGetLSN(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		high.seq = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	end_spi();
	insert_plan = read_plan = NULL;
}

RtPos
rt_history_high(void)
{
	return high;
}

/*
 * rt_history_note
 *		A table change at pos was delivered (changes are live only, not
 *		stored): positions up to it are settled, so a client resuming from
 *		it is told what it missed rather than to re-sync.
 */
void
rt_history_note(RtPos pos)
{
	if (rt_pos_cmp(pos, high) > 0)
		high = pos;
}

static Datum
text_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * rt_history_insert
 *		Store a decoded batch, in one committed transaction.
 */
void
rt_history_insert(List *batch)
{
	int n = 0, i = 0;
	Datum *lsn, *seq, *topic, *event, *payload, *ts;
	Datum args[6];
	Oid types[6] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
					INT8ARRAYOID};
	ListCell *lc;

	foreach (lc, batch)
		n += ((RtEvent *) lfirst(lc))->op == 0;
	if (n == 0)
		return;
	lsn = palloc(n * sizeof(Datum));
	seq = palloc(n * sizeof(Datum));
	topic = palloc(n * sizeof(Datum));
	event = palloc(n * sizeof(Datum));
	payload = palloc(n * sizeof(Datum));
	ts = palloc(n * sizeof(Datum));
	foreach (lc, batch)
	{
		RtEvent *ev = lfirst(lc);

		if (ev->op != 0)
			continue;
		lsn[i] = Int64GetDatum((int64) ev->pos.lsn);
		seq[i] = Int32GetDatum((int32) ev->pos.seq);
		topic[i] = CStringGetTextDatum(ev->topic);
		event[i] = CStringGetTextDatum(ev->event);
		payload[i] = CStringGetTextDatum(ev->payload);
		ts[i] = Int64GetDatum(ev->commit_time);
		i++;
		if (rt_pos_cmp(ev->pos, high) > 0)
			high = ev->pos;
	}
	args[0] = PointerGetDatum(construct_array(lsn, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(seq, n, INT4OID, 4, true, TYPALIGN_INT));
	args[2] = text_array(topic, n);
	args[3] = text_array(event, n);
	args[4] = text_array(payload, n);
	args[5] = PointerGetDatum(construct_array(ts, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	begin_spi();
	if (insert_plan == NULL)
		insert_plan = keep_plan(
			"INSERT INTO bv_realtime.messages (commit_lsn, seq, topic, event, payload, committed_at) "
			"SELECT '0/0'::pg_catalog.pg_lsn + l::pg_catalog.numeric, s, t, e, p::jsonb, "
			"pg_catalog.to_timestamp(c / 1000000.0 + 946684800) "
			"FROM unnest($1, $2, $3, $4, $5, $6) AS u(l, s, t, e, p, c) "
			"ON CONFLICT DO NOTHING",
			6, types);
	if (SPI_execute_plan(insert_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into bv_realtime.messages");
	end_spi();
}

static RtResume history_read(List *topics, RtPos after, int limit, List **rows);

/*
 * rt_history_read
 *		The messages of topic after position "after", oldest first, at most
 *		limit (RT_RESUME_TOO_MANY when there are more), as RtEvents in the
 *		caller's context; RT_RESUME_MISS when the history cannot tell.  Runs
 *		inside libwebsockets callbacks: an error is logged and is a miss.
 */
RtResume
rt_history_read(List *topics, RtPos after, int limit, List **rows)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile RtResume result = RT_RESUME_MISS;

	PG_TRY();
	{
		result = history_read(topics, after, limit, rows);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG, (errmsg("bv_realtime could not read the history: %s", edata->message)));
		FreeErrorData(edata);
		*rows = NIL;
		result = RT_RESUME_MISS;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return result;
}

static RtResume
history_read(List *topics, RtPos after, int limit, List **rows)
{
	Datum args[4];
	Oid types[4] = {TEXTARRAYOID, LSNOID, INT4OID, INT4OID};
	MemoryContext outer = CurrentMemoryContext;
	RtResume result = RT_RESUME_HIT;
	uint64 i;

	*rows = NIL;
	if (rt_pos_cmp(after, low) < 0 || rt_pos_cmp(after, high) > 0)
		return RT_RESUME_MISS;
	if (rt_pos_cmp(after, high) == 0)
		return RT_RESUME_HIT;

	begin_spi();
	if (read_plan == NULL)
		read_plan = keep_plan(
			"SELECT commit_lsn, seq, event, payload::text, topic FROM bv_realtime.messages "
			"WHERE topic = ANY ($1) AND (commit_lsn, seq) > ($2, $3) "
			"ORDER BY commit_lsn, seq LIMIT $4",
			4, types);
	{
		Datum *elems = palloc(list_length(topics) * sizeof(Datum));
		ListCell *lc;
		int n = 0;

		foreach (lc, topics)
			elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
		args[0] = text_array(elems, n);
	}
	args[1] = LSNGetDatum(after.lsn);
	args[2] = Int32GetDatum((int32) after.seq);
	args[3] = Int32GetDatum(limit + 1);
	if (SPI_execute_plan(read_plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read bv_realtime.messages");
	if (SPI_processed > (uint64) limit)
		result = RT_RESUME_TOO_MANY;
	else
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple tup = SPI_tuptable->vals[i];
			TupleDesc desc = SPI_tuptable->tupdesc;
			MemoryContext spi = MemoryContextSwitchTo(outer);
			RtEvent *ev = palloc(sizeof(RtEvent));
			bool isnull;

			ev->pos.lsn = DatumGetLSN(SPI_getbinval(tup, desc, 1, &isnull));
			ev->pos.seq = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			ev->topic = SPI_getvalue(tup, desc, 5);
			ev->event = SPI_getvalue(tup, desc, 3);
			ev->payload = SPI_getvalue(tup, desc, 4);
			ev->commit_time = 0; /* a replay: no latency sample */
			*rows = lappend(*rows, ev);
			MemoryContextSwitchTo(spi);
		}
	end_spi();
	return result;
}

/*
 * rt_history_prune
 *		Delete by age and count; move the low mark to the last deleted
 *		position.
 */
void
rt_history_prune(void)
{
	Datum args[2];
	Oid types[2] = {INT4OID, INT4OID};

	begin_spi();
	args[0] = Int32GetDatum(rt_history_retention_s);
	args[1] = Int32GetDatum(rt_history_max_rows);
	if (SPI_execute_with_args(
			"WITH cut AS ("
			"  (SELECT commit_lsn, seq FROM bv_realtime.messages"
			"   WHERE $1 > 0 AND committed_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
			"   ORDER BY commit_lsn DESC, seq DESC LIMIT 1)"
			"  UNION ALL"
			"  (SELECT commit_lsn, seq FROM bv_realtime.messages"
			"   ORDER BY commit_lsn DESC, seq DESC OFFSET $2 LIMIT 1)"
			"), top AS (SELECT commit_lsn, seq FROM cut ORDER BY commit_lsn DESC, seq DESC LIMIT 1),"
			" gone AS (DELETE FROM bv_realtime.messages m USING top"
			"   WHERE (m.commit_lsn, m.seq) <= (top.commit_lsn, top.seq) RETURNING 1)"
			" UPDATE bv_realtime.history_state s"
			"   SET retained_after_lsn = top.commit_lsn, retained_after_seq = top.seq"
			"   FROM top RETURNING top.commit_lsn, top.seq, (SELECT pg_catalog.count(*) FROM gone)",
			2, types, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not prune bv_realtime.messages");
	if (SPI_processed > 0)
	{
		bool isnull;
		HeapTuple tup = SPI_tuptable->vals[0];

		low.lsn = DatumGetLSN(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		low.seq = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		rt_count(RT_C_HISTORY_PRUNED,
				 DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)));
	}
	end_spi();
}
