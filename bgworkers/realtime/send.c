/*-------------------------------------------------------------------------
 *
 * send.c
 *	  bv_realtime's SQL-callable functions: send() and stats().
 *
 * bv_realtime.send(topic, event, payload) writes one transactional logical
 * decoding message (prefix "bv_realtime") into the WAL.  It costs one WAL
 * record and no heap write; the gateway's slot decodes it after commit, in
 * commit order, and never if the transaction (or the subtransaction that
 * wrote it) rolls back.  The content is "topic\0event\0payload" where the
 * payload is jsonb's text form (one line: JSON strings escape newlines), so
 * the gateway frames it for WebSocket and SSE without parsing it again.
 *
 * bv_realtime.stats() reads the worker's shared counters; it takes the
 * spinlock only to copy the text fields.
 *
 * Memory: CurrentMemoryContext (the caller's statement context).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xlog.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "bv_realtime.h"

PG_FUNCTION_INFO_V1(bv_realtime_send);
PG_FUNCTION_INFO_V1(bv_realtime_stats);
PG_FUNCTION_INFO_V1(bv_realtime_revoke);

/* Topic and event names: the rule of rt_name_is_valid, with the SQL error. */
static inline void
CheckName(const char *what, text *value, size_t max)
{
	if (!rt_name_is_valid(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), max))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s name", what),
				 errdetail("A %s name has 1 to %d bytes of printable ASCII without spaces, "
						   "commas, double quotes or backslashes.",
						   what, (int) max),
				 errhint("Use names such as \"room:42\" or \"user.typing\".")));
}

/*
 * bv_realtime.send(topic text, event text, payload jsonb) returns void
 *		Broadcast payload on topic, delivered to subscribers after commit.
 */
Datum
bv_realtime_send(PG_FUNCTION_ARGS)
{
	text *topic, *event;
	char *payload;
	size_t plen;
	StringInfoData buf;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic and event must not be null"),
				 errhint("Give a topic and an event name; the payload may be null.")));
	topic = PG_GETARG_TEXT_PP(0);
	event = PG_GETARG_TEXT_PP(1);
	CheckName("topic", topic, RT_TOPIC_MAX);
	if (VARSIZE_ANY_EXHDR(topic) >= strlen(RT_TABLE_PREFIX) &&
		memcmp(VARDATA_ANY(topic), RT_TABLE_PREFIX, strlen(RT_TABLE_PREFIX)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topics starting with \"%s\" are reserved for table changes",
						RT_TABLE_PREFIX),
				 errhint("Choose another topic name; table changes are delivered from the WAL "
						 "to subscribers of \"table:<schema>.<name>\".")));
	CheckName("event", event, RT_EVENT_MAX);

	if (PG_ARGISNULL(2))
		payload = "null";
	else
	{
		Jsonb *jb = PG_GETARG_JSONB_P(2);

		payload = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	}
	plen = strlen(payload);
	if (plen > (size_t) rt_max_payload)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload too large for bv_realtime.send()"),
				 errdetail("The payload has %zu bytes; bv_realtime.max_payload is %d.", plen,
						   rt_max_payload),
				 errhint("Send a smaller payload (an id clients fetch), or raise "
						 "bv_realtime.max_payload.")));
	if (!XLogLogicalInfoActive())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bv_realtime.send() needs wal_level = logical"),
				 errhint("Set wal_level = logical (tools/bitvelocity.conf does) and restart.")));

	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));
	appendStringInfoChar(&buf, '\0');
	appendBinaryStringInfo(&buf, VARDATA_ANY(event), VARSIZE_ANY_EXHDR(event));
	appendStringInfoChar(&buf, '\0');
	appendBinaryStringInfo(&buf, payload, plen);
	(void) LogLogicalMessage(RT_MSG_PREFIX, buf.data, buf.len, true);
	PG_RETURN_VOID();
}

/*
 * bv_realtime.revoke(topic text, sub text) returns void
 *		After commit, the gateway ends the subscriptions to topic (and the
 *		presence there, and cached publish/presence decisions) of every
 *		connection whose token's sub claim is sub.  A transactional message
 *		of its own prefix, so that send() can never forge one.
 */
Datum
bv_realtime_revoke(PG_FUNCTION_ARGS)
{
	text *topic, *sub;
	StringInfoData buf;
	size_t slen;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic and sub must not be null"),
				 errhint("Give the topic and the sub claim of the user who loses it.")));
	topic = PG_GETARG_TEXT_PP(0);
	sub = PG_GETARG_TEXT_PP(1);
	CheckName("topic", topic, RT_TOPIC_MAX);
	slen = VARSIZE_ANY_EXHDR(sub);
	if (slen == 0 || slen > RT_SUB_MAX || memchr(VARDATA_ANY(sub), '\0', slen))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid sub for bv_realtime.revoke()"),
				 errdetail("A sub has 1 to %d bytes.", RT_SUB_MAX),
				 errhint("Give the sub claim of the user's tokens.")));
	if (!XLogLogicalInfoActive())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bv_realtime.revoke() needs wal_level = logical"),
				 errhint("Set wal_level = logical (tools/bitvelocity.conf does) and restart.")));
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(topic), VARSIZE_ANY_EXHDR(topic));
	appendStringInfoChar(&buf, '\0');
	appendBinaryStringInfo(&buf, VARDATA_ANY(sub), slen);
	(void) LogLogicalMessage(RT_REVOKE_PREFIX, buf.data, buf.len, true);
	PG_RETURN_VOID();
}

/* The latency (ms) under which a fraction q of the recorded deliveries fall. */
static double
latency_quantile(const uint64 *hist, uint64 total, double q)
{
	uint64 rank = (uint64) ceil(q * (double) total), seen = 0;
	int b;

	if (total == 0)
		return 0;
	for (b = 0; b < RT_LAT_BUCKETS; b++)
	{
		seen += hist[b];
		if (seen >= rank)
			return pow(2.0, (double) (b + 1) / 8.0) / 1000.0; /* bucket's upper bound */
	}
	return pow(2.0, (double) RT_LAT_BUCKETS / 8.0) / 1000.0;
}

/*
 * bv_realtime.stats(): one row of the gateway's figures.
 */
Datum
bv_realtime_stats(PG_FUNCTION_ARGS)
{
	TupleDesc tupdesc;
	Datum values[40];
	bool nulls[40] = {0};
	char state[32], listen[64], last_error[RT_ERRLEN];
	pid_t pid;
	uint64 hist[RT_LAT_BUCKETS], total = 0;
	int i, n = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (rt_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bv_realtime is not loaded"),
				 errhint("Add bv_realtime to shared_preload_libraries and restart.")));

	SpinLockAcquire(&rt_shared->mutex);
	strlcpy(state, rt_shared->state, sizeof(state));
	strlcpy(listen, rt_shared->listen, sizeof(listen));
	strlcpy(last_error, rt_shared->last_error, sizeof(last_error));
	pid = rt_shared->worker_pid;
	SpinLockRelease(&rt_shared->mutex);
	for (i = 0; i < RT_LAT_BUCKETS; i++)
		total += (hist[i] = pg_atomic_read_u64(&rt_shared->latency[i]));

	values[n++] = CStringGetTextDatum(state);
	values[n] = CStringGetTextDatum(listen);
	nulls[n++] = listen[0] == '\0';
	values[n] = Int32GetDatum(pid);
	nulls[n++] = pid == 0;
	values[n++] = Int32GetDatum(pg_atomic_read_u32(&rt_shared->connections));
	values[n++] = Int32GetDatum(pg_atomic_read_u32(&rt_shared->ws_connections));
	values[n++] = Int32GetDatum(pg_atomic_read_u32(&rt_shared->sse_connections));
	values[n++] = Int32GetDatum(pg_atomic_read_u32(&rt_shared->subscriptions));
	for (i = 0; i < RT_C_V1_COUNTERS; i++)
		values[n++] = Int64GetDatum((int64) pg_atomic_read_u64(&rt_shared->counters[i]));
	values[n] = Float8GetDatum(latency_quantile(hist, total, 0.50));
	nulls[n++] = total == 0;
	values[n] = Float8GetDatum(latency_quantile(hist, total, 0.99));
	nulls[n++] = total == 0;
	values[n] = CStringGetTextDatum(last_error);
	nulls[n++] = last_error[0] == '\0';
	/* 0.2.0's columns follow 0.1.0's: the same C function serves both */
	if (tupdesc->natts > n)
	{
		for (i = RT_C_V1_COUNTERS; i < RT_C_V2_COUNTERS; i++)
			values[n++] = Int64GetDatum((int64) pg_atomic_read_u64(&rt_shared->counters[i]));
		values[n++] = Int32GetDatum((int32) pg_atomic_read_u32(&rt_shared->presence_count));
	}
	/* 0.3.0's columns: rate limits */
	if (tupdesc->natts > n)
		for (i = RT_C_V2_COUNTERS; i < RT_C_V3_COUNTERS; i++)
			values[n++] = Int64GetDatum((int64) pg_atomic_read_u64(&rt_shared->counters[i]));
	/* 0.4.0's columns: per-user limit, handlers */
	if (tupdesc->natts > n)
		for (i = RT_C_V3_COUNTERS; i < RT_NCOUNTERS; i++)
			values[n++] = Int64GetDatum((int64) pg_atomic_read_u64(&rt_shared->counters[i]));
	if (n != tupdesc->natts)
		elog(ERROR, "bv_realtime.stats() has %d columns, the library fills %d", tupdesc->natts, n);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(bv_realtime_invoker);

/*
 * bv_realtime.invoker(): the role that called the API.  Inside a SECURITY
 * DEFINER function current_user is the owner; the outer user id is the
 * role the session runs as (SET ROLE included).
 */
Datum
bv_realtime_invoker(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}
