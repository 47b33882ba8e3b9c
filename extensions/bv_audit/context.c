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
 * The context is read once per statement, not once per row: the stamp
 * trigger and the capture trigger of every row of one statement share it.
 * A statement is identified by the backend's local transaction id and the
 * command id, which every writing statement consumes and which advances
 * before the next one (CommandCounterIncrement), including the statements
 * of functions and a ROLLBACK TO SAVEPOINT's successors.  So a
 * bv.set_actor(), SET LOCAL or set_config() between two statements of a
 * transaction is seen by the second one; only a change made in the middle
 * of one statement (by a function it calls) is not seen by its remaining
 * rows.  Reading bv.actor() and bv.trace_context() costs several setting
 * lookups by name, which a single-row UPDATE would otherwise pay twice.
 *
 * The client address does not change during a session: it is computed once
 * and kept in TopMemoryContext too.
 *
 * Memory: the cached context is copied into its own small context under
 * TopMemoryContext, reset when the next statement reads the context, so a
 * long transaction of many statements does not accumulate copies.
 * Backend-local; no locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "bv_audit.h"

static FmgrInfo actor_finfo;
static FmgrInfo trace_finfo;
static bool functions_ready = false;

static bool client_ready = false;
static Datum client_addr;
static bool client_null = true;

/* The context of the current statement (see the file comment). */
static MemoryContext context_cxt = NULL;
static bool context_valid = false;
static LocalTransactionId context_lxid;
static CommandId context_cid;
static BvAuditContext context_cache;

/*
 * Resolve bv.<name>() once; an absent function means bv_core is broken.
 * The lookup goes through the catalog cache, not LookupFuncName(): that
 * checks the writer's USAGE on schema bv, which a table's owner or an
 * application role need not have, and its first audited write then failed
 * with "permission denied for schema bv" (red-team review).  Calling the
 * function through fmgr checks no privilege either, as for any trigger.
 */
static void
lookup_bv_function(const char *name, FmgrInfo *finfo)
{
	Oid nsp = get_namespace_oid("bv", true);
	Oid fnoid = InvalidOid;

	if (OidIsValid(nsp))
		fnoid = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid, CStringGetDatum(name),
								PointerGetDatum(buildoidvector(NULL, 0)), ObjectIdGetDatum(nsp));
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
static Datum
read_actor(void)
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

/*
 * The context of the current statement: who, from where, under which
 * trace.  Read at the statement's first row and returned from the cache for
 * its other rows and triggers (see the file comment).  The result and its
 * values stay valid until the next statement reads the context.
 */
const BvAuditContext *
bv_audit_context(void)
{
	LocalTransactionId lxid = MyProc->lxid;
	CommandId cid = GetCurrentCommandId(false);
	MemoryContext old;
	BvAuditContext fresh;

	if (context_valid && context_lxid == lxid && context_cid == cid)
		return &context_cache;

	ensure_functions();
	ensure_client();
	if (context_cxt == NULL)
		context_cxt = AllocSetContextCreate(TopMemoryContext, "bv_audit context",
											ALLOCSET_SMALL_SIZES);
	context_valid = false;
	MemoryContextReset(context_cxt);

	/* bv_core's functions allocate in the current context: read, then copy. */
	fresh.actor = read_actor();
	fresh.trace = call0(&trace_finfo, &fresh.trace_null);
	fresh.app_null = (application_name == NULL || application_name[0] == '\0');

	old = MemoryContextSwitchTo(context_cxt);
	context_cache.actor = datumCopy(fresh.actor, false, -1);
	context_cache.trace_null = fresh.trace_null;
	context_cache.trace = fresh.trace_null ? (Datum) 0 : datumCopy(fresh.trace, false, -1);
	context_cache.app_null = fresh.app_null;
	context_cache.app = fresh.app_null ? (Datum) 0 : CStringGetTextDatum(application_name);
	MemoryContextSwitchTo(old);
	context_cache.client = client_addr;
	context_cache.client_null = client_null;

	context_lxid = lxid;
	context_cid = cid;
	context_valid = true;
	return &context_cache;
}
