/*-------------------------------------------------------------------------
 *
 * presence.c
 *	  Presence: who is in a topic, with what state, kept in shared memory
 *	  so that SQL (bv_realtime.presence(topic)) sees what the gateway's
 *	  clients see.
 *
 * A fixed array of bv_realtime.max_presence entries, allocated at server
 * start.  An entry is one connection's presence in one topic: the
 * connection's number (the worker's own counter), the topic, a key (the
 * token's sub claim, else its role), the state the client sent (JSON, at
 * most RT_PRESENCE_STATE bytes) and when it joined.  Full means a join is
 * refused with a reason; nothing is evicted.
 *
 * Concurrency: one writer (the gateway worker) and any number of readers
 * (SQL).  The array is guarded by one LWLock (named tranche
 * "bv_realtime_presence"): the worker takes it exclusively for each
 * change, readers shared to copy a topic's entries.  The worker empties
 * the array when it starts: the connections of a previous run are gone.
 *
 * Memory: shared memory only; readers copy into their own context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "bv_realtime.h"

typedef struct RtPresence
{
	uint64 conn; /* 0: free */
	TimestampTz joined_at;
	char topic[RT_TOPIC_MAX + 1];
	char key[RT_PRESENCE_KEY + 1];
	char state[RT_PRESENCE_STATE + 1];
} RtPresence;

typedef struct RtPresenceTable
{
	LWLock *lock;
	int size;
	RtPresence entries[FLEXIBLE_ARRAY_MEMBER];
} RtPresenceTable;

static RtPresenceTable *ptab = NULL;

Size
rt_presence_shmem_size(void)
{
	return add_size(offsetof(RtPresenceTable, entries),
					mul_size(sizeof(RtPresence), rt_max_presence));
}

void
rt_presence_shmem_request(void)
{
	RequestAddinShmemSpace(rt_presence_shmem_size());
	RequestNamedLWLockTranche("bv_realtime_presence", 1);
}

/* Under AddinShmemInitLock (rt_shmem_startup). */
void
rt_presence_shmem_init(void)
{
	bool found;

	ptab = ShmemInitStruct("bv_realtime presence", rt_presence_shmem_size(), &found);
	if (!found)
	{
		memset(ptab, 0, rt_presence_shmem_size());
		ptab->lock = &(GetNamedLWLockTranche("bv_realtime_presence"))->lock;
		ptab->size = rt_max_presence;
	}
}

/* The worker starts: no connection of a previous run is present. */
void
rt_presence_reset(void)
{
	if (ptab == NULL)
		return;
	LWLockAcquire(ptab->lock, LW_EXCLUSIVE);
	memset(ptab->entries, 0, sizeof(RtPresence) * ptab->size);
	LWLockRelease(ptab->lock);
	pg_atomic_write_u32(&rt_shared->presence_count, 0);
}

/*
 * rt_presence_set
 *		Connection conn is in topic with key and state (JSON text): a new
 *		entry (*joined true) or a new state.  false when the table is full.
 */
bool
rt_presence_set(uint64 conn, const char *topic, const char *key, const char *state,
				int per_conn_max, bool *joined, bool *conn_full)
{
	int i, free_slot = -1, mine = 0;
	bool ok = true;

	*joined = false;
	*conn_full = false;
	LWLockAcquire(ptab->lock, LW_EXCLUSIVE);
	for (i = 0; i < ptab->size; i++)
	{
		RtPresence *p = &ptab->entries[i];

		if (p->conn == conn && strcmp(p->topic, topic) == 0)
			break;
		if (p->conn == conn)
			mine++;
		if (p->conn == 0 && free_slot < 0)
			free_slot = i;
	}
	if (i == ptab->size)
	{
		/* one connection may not take the table that every client shares */
		if (mine >= per_conn_max)
		{
			ok = false;
			*conn_full = true;
		}
		else if (free_slot < 0)
			ok = false;
		else
		{
			RtPresence *p = &ptab->entries[free_slot];

			p->conn = conn;
			p->joined_at = GetCurrentTimestamp();
			strlcpy(p->topic, topic, sizeof(p->topic));
			strlcpy(p->key, key, sizeof(p->key));
			strlcpy(p->state, state, sizeof(p->state));
			*joined = true;
			pg_atomic_fetch_add_u32(&rt_shared->presence_count, 1);
		}
	}
	else
		strlcpy(ptab->entries[i].state, state, sizeof(ptab->entries[i].state));
	LWLockRelease(ptab->lock);
	return ok;
}

/*
 * rt_presence_remove
 *		Connection conn leaves topic (NULL: every topic).  Returns the
 *		topics it left (palloc'd strings) with *keys the matching keys.
 */
List *
rt_presence_remove(uint64 conn, const char *topic, List **keys)
{
	List *left = NIL;
	int i;

	*keys = NIL;
	if (ptab == NULL)
		return NIL;
	LWLockAcquire(ptab->lock, LW_EXCLUSIVE);
	for (i = 0; i < ptab->size; i++)
	{
		RtPresence *p = &ptab->entries[i];

		if (p->conn != conn || (topic && strcmp(p->topic, topic) != 0))
			continue;
		left = lappend(left, pstrdup(p->topic));
		*keys = lappend(*keys, pstrdup(p->key));
		p->conn = 0;
		pg_atomic_fetch_sub_u32(&rt_shared->presence_count, 1);
	}
	LWLockRelease(ptab->lock);
	return left;
}

/*
 * rt_presence_list
 *		The presence of topic as a JSON array of {"key","state"} (palloc'd).
 */
char *
rt_presence_list(const char *topic)
{
	StringInfoData buf;
	int i;
	bool first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	LWLockAcquire(ptab->lock, LW_SHARED);
	for (i = 0; i < ptab->size; i++)
	{
		RtPresence *p = &ptab->entries[i];

		if (p->conn == 0 || strcmp(p->topic, topic) != 0)
			continue;
		if (!first)
			appendStringInfoChar(&buf, ',');
		first = false;
		appendStringInfoString(&buf, "{\"key\":");
		escape_json(&buf, p->key);
		appendStringInfo(&buf, ",\"state\":%s}", p->state);
	}
	LWLockRelease(ptab->lock);
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

PG_FUNCTION_INFO_V1(bv_realtime_presence);

/*
 * bv_realtime.presence(topic) returns setof (key, state, joined_at)
 */
Datum
bv_realtime_presence(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char *topic = text_to_cstring(PG_GETARG_TEXT_PP(0));
	RtPresence *copy;
	int i, n = 0;

	if (ptab == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bv_realtime is not loaded"),
				 errhint("Add bv_realtime to shared_preload_libraries and restart.")));
	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(RtPresence) * Max(ptab->size, 1));
	LWLockAcquire(ptab->lock, LW_SHARED);
	for (i = 0; i < ptab->size; i++)
		if (ptab->entries[i].conn != 0 && strcmp(ptab->entries[i].topic, topic) == 0)
			copy[n++] = ptab->entries[i];
	LWLockRelease(ptab->lock);
	for (i = 0; i < n; i++)
	{
		Datum values[3];
		bool nulls[3] = {0};

		values[0] = CStringGetTextDatum(copy[i].key);
		values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(copy[i].state));
		values[2] = TimestampTzGetDatum(copy[i].joined_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
