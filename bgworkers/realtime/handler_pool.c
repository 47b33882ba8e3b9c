/*-------------------------------------------------------------------------
 *
 * handler_pool.c
 *	  SQL handlers off the gateway's event loop: a few libpq connections to
 *	  our own database, used without blocking, that run the handler calls
 *	  of client messages (bv_realtime.handler_call(), handler.c) while the
 *	  loop goes on delivering.
 *
 * Why: the worker is one thread.  A handler run inside it (0.4.0) stalled
 * every connection for its duration, up to bv_realtime.handler_timeout.
 * Here the loop only sends the call (PQsendQueryParams) and later reads
 * the row that answers it; the handler runs in another backend.
 *
 * Model:
 *   - bv_realtime.handler_connections connections (0: no pool; handlers
 *     run in the loop as before), opened on first use as the bootstrap
 *     superuser over the local socket (a blocking connect of a few ms,
 *     once; a failed one is retried after 5 s, and calls meanwhile run in
 *     the loop).  Their sockets join the gateway's epoll set
 *     (level-triggered), so an answer wakes the worker.
 *   - One call in flight per connection.  Waiting calls sit in one FIFO
 *     bounded by RT_POOL_QUEUE; a call beyond it is refused (503), it never
 *     waits in the loop.
 *   - At most one call per client in flight: a client's calls run in the
 *     order it sent them (a chat client's messages keep their order);
 *     replies carry the client's ref.
 *   - A client that goes away leaves its waiting calls dropped and its
 *     running call's answer ignored (the handler's transaction still
 *     commits: it was accepted).
 *   - Security is the backend's: handler_call() switches to the client's
 *     role, locks it (rt_role_lock) and arms handler_timeout there, as
 *     rt_handler_call() does in the loop; the function is for superusers
 *     only.
 *
 * Memory: requests and their strings are malloc'd (they live across
 * passes); results are palloc'd in the worker's per-pass context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "lib/ilist.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "bv_realtime.h"

#define RT_POOL_MAX   16  /* bv_realtime.handler_connections' maximum */
#define RT_POOL_QUEUE 256 /* calls waiting for a connection */

typedef struct PoolReq
{
	dlist_node node; /* in waiting */
	void *owner;     /* the client (gateway.c); NULL once it has gone */
	Oid handler;
	char role[NAMEDATALEN];
	char *claims;
	char *topic;
	char *event;
	char *payload; /* NULL: none */
	char *ref;     /* raw JSON */
} PoolReq;

typedef struct PoolConn
{
	PGconn *conn;
	PoolReq *running;
	TimestampTz retry_at; /* after a failed connect: not before */
} PoolConn;

static PoolConn pool[RT_POOL_MAX];
static dlist_head waiting = DLIST_STATIC_INIT(waiting);
static int nwaiting = 0;
static TimestampTz pool_down_until = 0; /* handler_call() missing: no pool until then */

static const char *call_sql =
	"SELECT status, sqlstate, result, message, hint FROM bv_realtime.handler_call("
	"$1::pg_catalog.oid::pg_catalog.regprocedure, $2, $3, $4, $5, $6, $7::pg_catalog.int4)";

static void
req_free(PoolReq *r)
{
	if (r == NULL)
		return;
	free(r->claims);
	free(r->topic);
	free(r->event);
	free(r->payload);
	free(r->ref);
	free(r);
}

static char *
dup_or_null(const char *s, bool *oom)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*oom = true;
	return d;
}

/* Is fd one of the pool's sockets? */
bool
rt_pool_is_fd(int fd)
{
	int i;

	for (i = 0; i < RT_POOL_MAX; i++)
		if (pool[i].conn != NULL && PQsocket(pool[i].conn) == fd)
			return true;
	return false;
}

static void
conn_close(PoolConn *pc)
{
	if (pc->conn != NULL)
		PQfinish(pc->conn); /* its socket leaves the epoll set when closed */
	pc->conn = NULL;
}

/* Open connection pc (blocking, local); false when it cannot be used now. */
static bool
conn_open(PoolConn *pc)
{
	TimestampTz now = GetCurrentTimestamp();
	PGresult *res;
	bool ok;

	if (pc->retry_at > now || now < pool_down_until || rt_superuser[0] == '\0')
		return false;
	pc->conn = PQconnectdb(rt_local_conninfo(rt_superuser, false));
	if (PQstatus(pc->conn) != CONNECTION_OK)
	{
		ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
						  errmsg("bv_realtime could not open a handler connection: %s",
								 PQerrorMessage(pc->conn)),
						  errhint("Handlers run in the gateway's loop until it can; check "
								  "pg_hba.conf for local connections of the bootstrap superuser "
								  "or set bv_realtime.handler_connections = 0.")));
		conn_close(pc);
		pc->retry_at = TimestampTzPlusMilliseconds(now, 5000);
		return false;
	}
	/*
	 * The extension may be older than the library: no handler_call() yet.
	 * The connection's own statements resolve names in pg_catalog only.
	 */
	res = PQexec(pc->conn, "SET search_path = pg_catalog, pg_temp; "
						   "SELECT pg_catalog.to_regprocedure('bv_realtime.handler_call(pg_catalog.regprocedure,"
						   "text,text,text,text,text,integer)') IS NOT NULL");
	ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
		 strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!ok || PQsetnonblocking(pc->conn, 1) != 0 || !rt_gateway_watch(PQsocket(pc->conn)))
	{
		conn_close(pc);
		pool_down_until = TimestampTzPlusMilliseconds(now, 30000);
		return false;
	}
	return true;
}

/* Does owner have a call running? */
static bool
owner_running(void *owner)
{
	int i;

	for (i = 0; i < RT_POOL_MAX; i++)
		if (pool[i].running != NULL && pool[i].running->owner == owner)
			return true;
	return false;
}

/*
 * rt_pool_submit
 *		Queue a handler call for owner.  true: queued (the reply comes
 *		through rt_gateway_handler_reply()); false and *busy: the queue is
 *		full; false otherwise: no pool now (the caller runs the call).
 */
bool
rt_pool_submit(void *owner, const RtIdentity *id, Oid handler, const char *topic,
			   const char *event, const char *payload, const char *ref, bool *busy)
{
	PoolReq *r;
	bool oom = false;
	int i, usable = 0;

	*busy = false;
	if (rt_handler_connections <= 0)
		return false;
	for (i = 0; i < Min(rt_handler_connections, RT_POOL_MAX); i++)
		if (pool[i].conn != NULL || conn_open(&pool[i]))
			usable++;
	if (usable == 0)
		return false;
	if (nwaiting >= RT_POOL_QUEUE)
	{
		*busy = true;
		return false;
	}
	r = calloc(1, sizeof(PoolReq));
	if (r == NULL)
	{
		*busy = true;
		return false;
	}
	r->owner = owner;
	r->handler = handler;
	strlcpy(r->role, id->role, sizeof(r->role));
	r->claims = dup_or_null(id->claims ? id->claims : "{}", &oom);
	r->topic = dup_or_null(topic, &oom);
	r->event = dup_or_null(event, &oom);
	r->payload = dup_or_null(payload, &oom);
	r->ref = dup_or_null(ref, &oom);
	if (oom)
	{
		req_free(r);
		*busy = true;
		return false;
	}
	dlist_push_tail(&waiting, &r->node);
	nwaiting++;
	rt_count(RT_C_HANDLER_CALLS, 1);
	rt_pool_service();
	return true;
}

/* owner has gone: drop its waiting calls, ignore its running call's answer. */
void
rt_pool_forget(void *owner)
{
	dlist_mutable_iter it;
	int i;

	dlist_foreach_modify(it, &waiting)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		PoolReq *r = dlist_container(PoolReq, node, it.cur);

		if (r->owner == owner)
		{
			dlist_delete(&r->node);
			nwaiting--;
			req_free(r);
		}
	}
	for (i = 0; i < RT_POOL_MAX; i++)
		if (pool[i].running != NULL && pool[i].running->owner == owner)
			pool[i].running->owner = NULL;
}

/* Answer r's owner (if still there) and free r. */
static void
finish(PoolReq *r, RtHandlerResult *res)
{
	if (res->status != 200)
		rt_count(RT_C_HANDLER_ERRORS, 1);
	if (r->owner != NULL)
		rt_gateway_handler_reply(r->owner, r->topic, r->event, r->ref, res);
	req_free(r);
}

static void
fail_running(PoolConn *pc, const char *why)
{
	RtHandlerResult res;

	memset(&res, 0, sizeof(res));
	res.status = 500;
	strlcpy(res.sqlstate, "08006", sizeof(res.sqlstate));
	res.message = pstrdup("the handler failed");
	ereport(LOG, (errmsg("bv_realtime: a handler connection failed: %s", why)));
	if (pc->running != NULL)
		finish(pc->running, &res);
	pc->running = NULL;
}

/* Read what pc's backend answered; true when its call is complete. */
static void
conn_read(PoolConn *pc)
{
	PGresult *pr;
	RtHandlerResult res;
	bool have = false;

	if (PQflush(pc->conn) < 0 || !PQconsumeInput(pc->conn))
	{
		fail_running(pc, PQerrorMessage(pc->conn));
		conn_close(pc);
		return;
	}
	memset(&res, 0, sizeof(res));
	while (!PQisBusy(pc->conn))
	{
		pr = PQgetResult(pc->conn);
		if (pr == NULL)
		{
			/* the call is complete */
			if (!have)
			{
				res.status = 500;
				strlcpy(res.sqlstate, "XX000", sizeof(res.sqlstate));
				res.message = pstrdup("the handler failed");
			}
			finish(pc->running, &res);
			pc->running = NULL;
			return;
		}
		if (!have && PQresultStatus(pr) == PGRES_TUPLES_OK && PQntuples(pr) == 1)
		{
			have = true;
			res.status = atoi(PQgetvalue(pr, 0, 0));
			strlcpy(res.sqlstate, PQgetvalue(pr, 0, 1), sizeof(res.sqlstate));
			res.result = PQgetisnull(pr, 0, 2) ? NULL : pstrdup(PQgetvalue(pr, 0, 2));
			res.message = PQgetisnull(pr, 0, 3) ? NULL : pstrdup(PQgetvalue(pr, 0, 3));
			res.hint = PQgetisnull(pr, 0, 4) ? NULL : pstrdup(PQgetvalue(pr, 0, 4));
		}
		else if (!have)
		{
			/* handler_call() itself failed (not the handler: that is a row) */
			const char *st = PQresultErrorField(pr, PG_DIAG_SQLSTATE);

			have = true;
			res.status = 500;
			strlcpy(res.sqlstate, st ? st : "XX000", sizeof(res.sqlstate));
			res.message = pstrdup("the handler failed");
			ereport(LOG, (errmsg("bv_realtime: handler call for topic \"%s\" failed: %s",
								 pc->running ? pc->running->topic : "?",
								 PQresultErrorMessage(pr))));
		}
		PQclear(pr);
	}
}

/* Send r on pc; false when the connection failed (r is then answered). */
static bool
conn_send(PoolConn *pc, PoolReq *r)
{
	char hbuf[16], tbuf[16];
	const char *values[7];

	snprintf(hbuf, sizeof(hbuf), "%u", r->handler);
	snprintf(tbuf, sizeof(tbuf), "%d", rt_handler_timeout_ms);
	values[0] = hbuf;
	values[1] = r->role;
	values[2] = r->claims;
	values[3] = r->topic;
	values[4] = r->event;
	values[5] = r->payload;
	values[6] = tbuf;
	pc->running = r;
	if (!PQsendQueryParams(pc->conn, call_sql, 7, NULL, values, NULL, NULL, 0) ||
		PQflush(pc->conn) < 0)
	{
		fail_running(pc, PQerrorMessage(pc->conn));
		conn_close(pc);
		return false;
	}
	return true;
}

/*
 * rt_pool_service
 *		Read the answers that arrived, then start waiting calls on idle
 *		connections (oldest first, one per client at a time).  Called every
 *		pass of the worker's loop (cheap when nothing runs).
 */
void
rt_pool_service(void)
{
	int i, n = Min(Max(rt_handler_connections, 0), RT_POOL_MAX);
	dlist_mutable_iter it;

	for (i = 0; i < RT_POOL_MAX; i++)
	{
		PoolConn *pc = &pool[i];

		if (pc->conn == NULL)
			continue;
		/* also for idle ones: a backend that ended leaves a readable socket */
		if (PQstatus(pc->conn) == CONNECTION_BAD || !PQconsumeInput(pc->conn))
		{
			fail_running(pc, PQerrorMessage(pc->conn));
			conn_close(pc);
			continue;
		}
		if (pc->running != NULL)
			conn_read(pc);
		/* fewer connections after a reload: close the idle ones beyond */
		if (pc->conn != NULL && pc->running == NULL && i >= n)
			conn_close(pc);
	}
	dlist_foreach_modify(it, &waiting)
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		PoolReq *r = dlist_container(PoolReq, node, it.cur);
		PoolConn *idle = NULL;

		if (owner_running(r->owner))
			continue;
		for (i = 0; i < n && idle == NULL; i++)
			if (pool[i].running == NULL && (pool[i].conn != NULL || conn_open(&pool[i])))
				idle = &pool[i];
		if (idle == NULL)
			break;
		dlist_delete(&r->node);
		nwaiting--;
		(void) conn_send(idle, r);
	}
}

/* Close the pool (the gateway stops): waiting and running calls are dropped. */
void
rt_pool_stop(void)
{
	int i;

	while (!dlist_is_empty(&waiting))
	{
		/* cppcheck-suppress nullPointer ; dlist_container is offsetof arithmetic, not a dereference */
		PoolReq *r = dlist_container(PoolReq, node, dlist_pop_head_node(&waiting));

		req_free(r);
	}
	nwaiting = 0;
	for (i = 0; i < RT_POOL_MAX; i++)
	{
		req_free(pool[i].running);
		pool[i].running = NULL;
		conn_close(&pool[i]);
		pool[i].retry_at = 0;
	}
	pool_down_until = 0;
}
