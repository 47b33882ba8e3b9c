/*-------------------------------------------------------------------------
 *
 * handler.c
 *	  Client messages answered by an SQL handler: a WebSocket client's
 *	  {"type":"broadcast"} on a topic whose matching 'publish' grant in
 *	  bv_realtime.topic_grants names a handler is not relayed; the gateway
 *	  calls handler(topic text, event text, payload jsonb) RETURNS jsonb and
 *	  answers the client with a reply carrying the status and the result.
 *
 * Each call is one short transaction, as PostgREST runs a request: the
 * worker switches to the connection's role (set_config('role', .., true)),
 * sets request.jwt.claims and request.realtime.event, and calls the
 * handler by its qualified name, so EXECUTE privilege, RLS and
 * SECURITY DEFINER behave exactly as they would over REST.  The call is
 * bounded by bv_realtime.handler_timeout (PostgreSQL's statement timeout,
 * armed here because SPI does not arm it); the transaction commits when
 * the handler returns and aborts when it raises.  What the handler writes
 * (a chat message, a send()) reaches subscribers through the WAL like
 * everything else.
 *
 * Errors become statuses (rt_handler_status: PTxyz -> xyz, 42501 -> 403,
 * 22xxx/23xxx/P0001 -> 400, 57014 -> 504, anything else -> 500).  A 4xx
 * reply carries the error's message and hint (the handler's own words
 * for the client; a constraint error's message is replaced, it names the
 * schema); a 500 or 504 reply a fixed message, the real one goes to the
 * server log.  Details never leave the server.
 *
 * The worker is single-threaded: a handler delays every delivery for its
 * duration, hence the timeout and the per-connection client-message rate
 * limit that applies before a message gets here (gateway.c).
 *
 * Memory: results are palloc'd in the caller's context (the worker's
 * per-pass context) before the transaction ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "bv_realtime.h"

typedef struct CallArgs
{
	const RtIdentity *id;
	Oid handler;
	const char *topic;
	const char *event;
	const char *payload; /* JSON text; NULL: SQL null */
	MemoryContext outer; /* where the result goes */
	char *result;
} CallArgs;

/*
 * rt_handler_status
 *		The HTTP-like status of a handler's error.
 */
int
rt_handler_status(int sqlerrcode)
{
	char *s = unpack_sql_state(sqlerrcode);

	if (s[0] == 'P' && s[1] == 'T' && isdigit((unsigned char) s[2]) &&
		isdigit((unsigned char) s[3]) && isdigit((unsigned char) s[4]))
	{
		int st = (s[2] - '0') * 100 + (s[3] - '0') * 10 + (s[4] - '0');

		if (st >= 400 && st <= 599)
			return st;
		return 500;
	}
	if (sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE)
		return 403;
	if (sqlerrcode == ERRCODE_QUERY_CANCELED)
		return 504;
	if (sqlerrcode == ERRCODE_RAISE_EXCEPTION || (s[0] == '2' && (s[1] == '2' || s[1] == '3')))
		return 400;
	return 500;
}

static void
call_spi(void *p)
{
	CallArgs *a = p;
	Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum args[3];
	char nulls[3] = {' ', ' ', ' '};
	char *nsp, *name;
	bool isnull;
	Datum d;

	args[0] = CStringGetTextDatum(a->id->role);
	args[1] = CStringGetTextDatum(a->id->claims);
	args[2] = CStringGetTextDatum(a->event);
	if (SPI_execute_with_args("SELECT pg_catalog.set_config('role', $1, true), "
							  "pg_catalog.set_config('request.jwt.claims', $2, true), "
							  "pg_catalog.set_config('request.realtime.event', $3, true)",
							  3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not switch role");
	rt_role_lock();
	nsp = get_namespace_name(get_func_namespace(a->handler));
	name = get_func_name(a->handler);
	if (nsp == NULL || name == NULL)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
						errmsg("the topic's handler no longer exists")));
	args[0] = CStringGetTextDatum(a->topic);
	args[1] = CStringGetTextDatum(a->event);
	if (a->payload)
		args[2] = CStringGetTextDatum(a->payload);
	else
		nulls[2] = 'n';
	if (SPI_execute_with_args(psprintf("SELECT %s($1, $2, $3::jsonb)::text",
									   quote_qualified_identifier(nsp, name)),
							  3, types, args, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "the handler returned no row");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		a->result = MemoryContextStrdup(a->outer, TextDatumGetCString(d));
}

/*
 * rt_handler_call
 *		Call handler for a client message, as the client, in a transaction
 *		of its own bounded by bv_realtime.handler_timeout; fill *res.
 */
void
rt_handler_call(const RtIdentity *id, Oid handler, const char *topic, const char *event,
				const char *payload, RtHandlerResult *res)
{
	MemoryContext outer = CurrentMemoryContext;
	CallArgs a = {id, handler, topic, event, payload, outer, NULL};

	memset(res, 0, sizeof(*res));
	rt_count(RT_C_HANDLER_CALLS, 1);
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		enable_timeout_after(STATEMENT_TIMEOUT, rt_handler_timeout_ms);
		call_spi(&a);
		disable_timeout(STATEMENT_TIMEOUT, false);
		rt_role_unlock();
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		res->status = 200;
		res->result = a.result;
	}
	PG_CATCH();
	{
		ErrorData *edata;

		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		res->status = rt_handler_status(edata->sqlerrcode);
		strlcpy(res->sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(res->sqlstate));
		if (res->status == 504)
		{
			rt_count(RT_C_HANDLER_TIMEOUTS, 1);
			res->message = pstrdup("the handler timed out (bv_realtime.handler_timeout)");
			res->hint = pstrdup("Try again later.");
		}
		else if (res->status == 500)
		{
			res->message = pstrdup("the handler failed");
			ereport(LOG, (errmsg("bv_realtime: handler %u for topic \"%s\" failed for role \"%s\": %s",
								 handler, topic, id->role, edata->message ? edata->message : "")));
		}
		else if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION)
		{
			/* the constraint's message names tables and columns: not for the client */
			res->message = pstrdup("the message conflicts with existing data");
			res->hint = pstrdup("Check the payload against the topic's rules.");
		}
		else
		{
			res->message = pstrdup(edata->message ? edata->message : "request refused");
			res->hint = edata->hint ? pstrdup(edata->hint) : NULL;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	/* a timeout that fired as the handler returned must not cancel later work */
	QueryCancelPending = false;
	MemoryContextSwitchTo(outer);
	if (res->status != 200)
		rt_count(RT_C_HANDLER_ERRORS, 1);
}
