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
 * Where it runs (0.5.0): normally not in the worker.  The gateway's loop is
 * single-threaded, and a handler run there delays every delivery for its
 * duration; so the gateway hands the call to a small pool of ordinary
 * backends (handler_pool.c), which run bv_realtime.handler_call() below:
 * the same steps, in a subtransaction of that backend's statement, with
 * the result returned as a row.  rt_handler_call() runs the call in the
 * worker itself, the fallback when the pool has no connection.  In both
 * the role lock (rt_role_lock) and the timeout are the same.
 *
 * Memory: results are palloc'd in the caller's context (the worker's
 * per-pass context) before the transaction ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "bv_realtime.h"

typedef struct CallArgs
{
	const char *role;
	const char *claims;
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

	args[0] = CStringGetTextDatum(a->role);
	args[1] = CStringGetTextDatum(a->claims);
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
	if (SPI_execute_with_args(psprintf("SELECT %s($1, $2, $3::pg_catalog.jsonb)::pg_catalog.text",
									   quote_qualified_identifier(nsp, name)),
							  3, types, args, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "the handler returned no row");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		a->result = MemoryContextStrdup(a->outer, TextDatumGetCString(d));
}

/* The result of a failed call: status, SQLSTATE, texts fit for the client. */
static void
fill_error(ErrorData *edata, Oid handler, const char *topic, const char *role, RtHandlerResult *res)
{
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
							 handler, topic, role, edata->message ? edata->message : "")));
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
}

/*
 * rt_handler_call
 *		Call handler for a client message, as the client, in a transaction
 *		of its own bounded by bv_realtime.handler_timeout; fill *res.  Runs
 *		in the worker's loop: the fallback when the handler pool
 *		(handler_pool.c) has no connection.
 */
void
rt_handler_call(const RtIdentity *id, Oid handler, const char *topic, const char *event,
				const char *payload, RtHandlerResult *res)
{
	MemoryContext outer = CurrentMemoryContext;
	CallArgs a = {id->role, id->claims, handler, topic, event, payload, outer, NULL};

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
		fill_error(edata, handler, topic, id->role, res);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	/* a timeout that fired as the handler returned must not cancel later work */
	QueryCancelPending = false;
	MemoryContextSwitchTo(outer);
	if (res->status != 200)
		rt_count(RT_C_HANDLER_ERRORS, 1);
}

PG_FUNCTION_INFO_V1(bv_realtime_handler_call);

/*
 * bv_realtime.handler_call(handler, role, claims, topic, event, payload,
 * timeout_ms): the same call run by a backend of the handler pool
 * (handler_pool.c), off the gateway's loop.  The handler runs in a
 * subtransaction of the caller's transaction: its writes commit with the
 * statement when it returns and are rolled back when it raises, and the
 * error becomes the result (status, sqlstate, message, hint) instead of
 * an ERROR, so the pool's connection stays usable and the server log gets
 * only what rt_handler_call would log.  Superusers only (the gateway's
 * own connections): it switches to any role it is given.
 */
Datum
bv_realtime_handler_call(PG_FUNCTION_ARGS)
{
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	CallArgs a;
	RtHandlerResult res;
	TupleDesc tupdesc;
	Datum values[5];
	bool nulls[5] = {false, false, false, false, false};
	int i;

	if (!superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("bv_realtime.handler_call is for the gateway's own connections"),
						errhint("Clients call handlers through the gateway's WebSocket.")));
	for (i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
							errmsg("bv_realtime.handler_call needs a handler, role, claims, topic and event"),
							errhint("Pass every argument but the payload.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	a.role = text_to_cstring(PG_GETARG_TEXT_PP(1));
	a.claims = text_to_cstring(PG_GETARG_TEXT_PP(2));
	a.handler = PG_GETARG_OID(0);
	a.topic = text_to_cstring(PG_GETARG_TEXT_PP(3));
	a.event = text_to_cstring(PG_GETARG_TEXT_PP(4));
	a.payload = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	a.outer = outer;
	a.result = NULL;
	memset(&res, 0, sizeof(res));

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(outer);
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		enable_timeout_after(STATEMENT_TIMEOUT,
							 PG_ARGISNULL(6) ? rt_handler_timeout_ms : Max(1, PG_GETARG_INT32(6)));
		call_spi(&a);
		disable_timeout(STATEMENT_TIMEOUT, false);
		rt_role_unlock();
		SPI_finish();
		PopActiveSnapshot();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = owner;
		res.status = 200;
		res.result = a.result;
	}
	PG_CATCH();
	{
		ErrorData *edata;

		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = owner;
		fill_error(edata, a.handler, a.topic, a.role, &res);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	/* a timeout that fired as the handler returned must not cancel the statement */
	QueryCancelPending = false;

	values[0] = Int32GetDatum(res.status);
	values[1] = CStringGetTextDatum(res.sqlstate[0] ? res.sqlstate : "00000");
	if (res.result)
		values[2] = CStringGetTextDatum(res.result);
	else
		nulls[2] = true;
	if (res.message)
		values[3] = CStringGetTextDatum(res.message);
	else
		nulls[3] = true;
	if (res.hint)
		values[4] = CStringGetTextDatum(res.hint);
	else
		nulls[4] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
