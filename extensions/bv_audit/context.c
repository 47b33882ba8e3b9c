/*-------------------------------------------------------------------------
 *
 * context.c
 *	  Who, when and from where: the request context of an audit record.
 *
 * The actor and the trace context come from bv_core's SQL functions
 * bv.actor() and bv.trace_context().  They live in another shared library,
 * so they are called through the function manager: their OIDs are resolved
 * by name once per backend and their FmgrInfos kept in TopMemoryContext.
 * bv_audit requires bv_core, so those functions cannot be dropped while
 * bv_audit exists; a backend therefore never holds a stale OID.
 *
 * The client address does not change during a session: it is computed once
 * and kept in TopMemoryContext too.  The application name is a setting that
 * may change at any time, so it is read each time (a pointer read).
 *
 * Results are allocated in CurrentMemoryContext (the trigger's per-tuple
 * context).  Backend-local; no locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "bv_audit.h"

static FmgrInfo actor_finfo;
static FmgrInfo trace_finfo;
static bool functions_ready = false;

static bool client_ready = false;
static Datum client_addr;
static bool client_null = true;

/* Resolve bv.<name>() once; an absent function means bv_core is broken. */
static void
lookup_bv_function(const char *name, FmgrInfo *finfo)
{
	String *schema = makeString("bv");
	String *func = makeString(pstrdup(name));
	List *fname = lappend(list_make1(schema), func);
	Oid fnoid = LookupFuncName(fname, 0, NULL, true);

	if (!OidIsValid(fnoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function bv.%s() does not exist", name),
				 errdetail("bv_audit takes the actor and trace context of every audit record from bv_core."),
				 errhint("Install or repair the bv_core extension: CREATE EXTENSION bv_core.")));
	fmgr_info_cxt(fnoid, finfo, TopMemoryContext);
}

static void
ensure_functions(void)
{
	if (functions_ready)
		return;
	lookup_bv_function("actor", &actor_finfo);
	lookup_bv_function("trace_context", &trace_finfo);
	functions_ready = true;
}

/* Call a zero-argument function that may return NULL. */
static Datum
call0(FmgrInfo *finfo, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 0);
	Datum result;

	InitFunctionCallInfoData(*fcinfo, finfo, 0, InvalidOid, NULL, NULL);
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/*
 * bv.actor() as a text Datum.  The actor is never NULL: bv.actor() falls
 * back to session_user.
 */
Datum
bv_audit_actor(void)
{
	bool isnull;
	Datum actor;

	ensure_functions();
	actor = call0(&actor_finfo, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("bv.actor() returned NULL"),
				 errdetail("Every audit record must name an actor."),
				 errhint("Set an actor with bv.set_actor() or repair bv_core.")));
	return actor;
}

/* The client address of this session, computed once. */
static void
ensure_client(void)
{
	LOCAL_FCINFO(fcinfo, 0);
	Datum addr;
	MemoryContext old;

	if (client_ready)
		return;
	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	addr = inet_client_addr(fcinfo);
	client_null = fcinfo->isnull;
	if (!client_null)
	{
		old = MemoryContextSwitchTo(TopMemoryContext);
		client_addr = datumCopy(addr, false, -1);
		MemoryContextSwitchTo(old);
	}
	client_ready = true;
}

/* Fill in the whole context of one audit record. */
void
bv_audit_context(BvAuditContext *ctx)
{
	ensure_client();
	ctx->actor = bv_audit_actor();
	ctx->trace = call0(&trace_finfo, &ctx->trace_null);
	ctx->app_null = (application_name == NULL || application_name[0] == '\0');
	ctx->app = ctx->app_null ? (Datum) 0 : CStringGetTextDatum(application_name);
	ctx->client = client_addr;
	ctx->client_null = client_null;
}
