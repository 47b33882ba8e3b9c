/*-------------------------------------------------------------------------
 *
 * auth.c
 *	  Who a client is, and what it may do: JWT verification through
 *	  bv_core, the role rule, and topic authorization under the client's
 *	  role.
 *
 * Authentication calls bv.jwt_verify() (bv_core: its keys, algorithm and
 * claim checks, revocation list), so the gateway accepts exactly the tokens
 * PostgREST and bv.pre_request() accept.  The role is the token's "role"
 * claim, or bv_realtime.anon_role when there is none; as in PostgREST it
 * must be a role that bv_realtime.authenticator may switch to, and never a
 * superuser.
 *
 * Authorization runs once per (connection, topic, action), at join:
 * inside one transaction the worker switches to the client's role
 * (set_config('role', ..., true)), sets request.jwt.claims as PostgREST
 * does, and calls bv_realtime.authorize(topic, action).  Deliveries are
 * never authorized one by one.
 *
 * Errors: each check runs in its own transaction inside PG_TRY; an error
 * (a bad token, a failing policy) is caught, copied, flushed, and the
 * transaction aborted, so that nothing unwinds through libwebsockets'
 * stack.  Messages returned to clients come from bv_core's fixed list of
 * details or from this file; never from the token.
 *
 * Memory: SPI results are copied into malloc'd or caller-provided
 * buffers before the transaction ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bv_realtime.h"

/*
 * rt_role_lock
 *		After switching to a client's role: refuse SET ROLE, RESET ROLE and
 *		SET SESSION AUTHORIZATION for the rest of the transaction, as inside
 *		a SECURITY DEFINER function.  The worker's session user is the
 *		bootstrap superuser, so code that runs as the client (a grant's
 *		check function or handler, a table's RLS policy, written by other
 *		roles than the client) could otherwise RESET ROLE and act as the
 *		superuser.
 *
 *		It also opens a GUC nest level: every setting that code changes,
 *		set_config(..., false) included, is undone by rt_role_unlock().
 *		Otherwise a policy could leave search_path (or statement_timeout,
 *		request.jwt.claims...) in the worker's session, where the worker's
 *		own queries run as the superuser and later clients' code runs.
 *		An abort restores both (AbortTransaction).
 */
static LocalTransactionId rt_lock_lxid = InvalidLocalTransactionId;
static int rt_lock_gucnest = 0;

void
rt_role_lock(void)
{
	Oid user;
	int sec;

	GetUserIdAndSecContext(&user, &sec);
	SetUserIdAndSecContext(user, sec | SECURITY_LOCAL_USERID_CHANGE);
	if (rt_lock_lxid != MyProc->lxid)
	{
		rt_lock_lxid = MyProc->lxid;
		rt_lock_gucnest = NewGUCNestLevel();
	}
}

/*
 * rt_role_unlock
 *		Before the commit of a transaction that ran code as a client (SPI
 *		connected): leave nothing of that code to run later, then become the
 *		worker's own user again.
 *
 *		Code PostgreSQL runs at commit would otherwise run as the client
 *		after the lock is gone (red-team 7: a deferred constraint trigger or
 *		a WITH HOLD cursor could RESET ROLE to the superuser).  So, still as
 *		the client and locked: SET CONSTRAINTS ALL IMMEDIATE fires the
 *		deferred triggers now, and CLOSE ALL drops the cursors without
 *		running them.  Then the settings are undone, the lock lifted and the
 *		role reset, and, as the worker: what such code may have left in the
 *		session (LISTEN, prepared statements, session advisory locks,
 *		temporary tables) is discarded, so no later client meets it (the
 *		handler pool's connections serve every client).  Nothing here when
 *		this transaction ran no client code.
 */
void
rt_role_unlock(void)
{
	Oid user;
	int sec;

	if (rt_lock_lxid != MyProc->lxid)
		return;
	AfterTriggerSetState(makeNode(ConstraintsSetStmt)); /* ALL IMMEDIATE */
	PortalHashTableDeleteAll();                         /* CLOSE ALL */
	/* as a subtransaction's abort: discard, SET included */
	AtEOXact_GUC(false, rt_lock_gucnest);
	rt_lock_lxid = InvalidLocalTransactionId;
	GetUserIdAndSecContext(&user, &sec);
	SetUserIdAndSecContext(user, sec & ~SECURITY_LOCAL_USERID_CHANGE);
	(void) set_config_option("role", "none", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
							 false);
	LockReleaseAll(USER_LOCKMETHOD, true); /* pg_advisory_unlock_all() */
	Async_UnlistenAll();
	DropAllPreparedStatements();
	ResetTempTableNamespace(); /* DISCARD TEMP */
}

/*
 * rt_run_guarded
 *		Run fn(arg) in a transaction with SPI; false and the error's texts on
 *		error (caught, copied, flushed, the transaction aborted).
 */
bool
rt_run_guarded(void (*fn)(void *), void *arg, char *detail, size_t detaillen, int *sqlerrcode)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		fn(arg);
		rt_role_unlock();
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (detail)
			strlcpy(detail, edata->detail ? edata->detail : (edata->message ? edata->message : ""),
					detaillen);
		if (sqlerrcode)
			*sqlerrcode = edata->sqlerrcode;
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return ok;
}

typedef struct AuthArgs
{
	const char *token;
	RtIdentity *id;
	bool role_ok;
	bool found;
} AuthArgs;

static void
authenticate_spi(void *p)
{
	AuthArgs *a = p;
	Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum args[3];
	HeapTuple tup;
	TupleDesc desc;
	bool isnull;
	char *s;

	args[0] = CStringGetTextDatum(a->token);
	args[1] = CStringGetTextDatum(rt_anon_role);
	args[2] = CStringGetTextDatum(rt_authenticator);
	if (SPI_execute_with_args(
			"WITH v AS (SELECT bv.jwt_verify($1) AS c), "
			"r AS (SELECT c, COALESCE(c ->> 'role', $2) AS role FROM v) "
			"SELECT c::text, role, c ->> 'jti', "
			"  CASE WHEN pg_catalog.jsonb_typeof(c -> 'exp') = 'number' "
			"       THEN pg_catalog.floor(LEAST((c ->> 'exp')::numeric, 9e15))::int8 END, "
			"  EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = role "
			"          AND NOT g.rolsuper AND pg_catalog.pg_has_role($3, g.oid, 'MEMBER')), "
			"  (c - 'exp' - 'iat' - 'nbf' - 'jti')::text, "
			"  CASE WHEN pg_catalog.jsonb_typeof(c -> 'sub') = 'string' THEN c ->> 'sub' END "
			"FROM r",
			3, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not verify the token");
	if (SPI_processed == 0)
		return;
	a->found = true;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	s = SPI_getvalue(tup, desc, 1);
	a->id->claims = strdup(s);
	s = SPI_getvalue(tup, desc, 2);
	strlcpy(a->id->role, s ? s : "", sizeof(a->id->role));
	s = SPI_getvalue(tup, desc, 3);
	strlcpy(a->id->jti, s ? s : "", sizeof(a->id->jti));
	a->id->exp = 0;
	{
		Datum d = SPI_getbinval(tup, desc, 4, &isnull);

		if (!isnull)
			a->id->exp = DatumGetInt64(d);
	}
	a->role_ok = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)) && !isnull;
	s = SPI_getvalue(tup, desc, 6);
	a->id->rls_claims = strdup(s ? s : "{}");
	s = SPI_getvalue(tup, desc, 7);
	if (s && strlen(s) <= RT_PRESENCE_KEY)
		strlcpy(a->id->sub, s, sizeof(a->id->sub));
	a->id->subject = s ? strdup(s) : NULL;
}

/* Free what an identity holds. */
void
rt_identity_free(RtIdentity *id)
{
	free(id->claims);
	id->claims = NULL;
	free(id->rls_claims);
	id->rls_claims = NULL;
	free(id->subject);
	id->subject = NULL;
}

/*
 * rt_authenticate
 *		Verify token; fill *id (claims malloc'd: free with free()).  false
 *		and a reason fit for the client otherwise.
 */
bool
rt_authenticate(const char *token, RtIdentity *id, char *reason, size_t reasonlen)
{
	/* cppcheck-suppress ctuuninitvar ; id is an output argument, filled by the callee */
	AuthArgs a = {token, id, false, false};
	char detail[RT_ERRLEN];
	int code = 0;

	memset(id, 0, sizeof(*id));
	if (token == NULL || token[0] == '\0')
	{
		strlcpy(reason, "a token is required", reasonlen);
		return false;
	}
	if (strlen(token) > RT_TOKEN_MAX)
	{
		strlcpy(reason, "invalid token: the token is too large", reasonlen);
		return false;
	}
	if (!rt_run_guarded(authenticate_spi, &a, detail, sizeof(detail), &code))
	{
		if (code == ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
		{
			/* bv_core's details are a fixed list, e.g. "The token has expired." */
			char *p;

			snprintf(reason, reasonlen, "invalid token: %s", detail);
			for (p = reason; *p; p++)
				*p = (*p == '.' && p[1] == '\0') ? '\0' : *p;
			reason[15] = tolower((unsigned char) reason[15]);
		}
		else
			strlcpy(reason, "invalid token", reasonlen);
		return false;
	}
	if (!a.found || !a.role_ok)
	{
		rt_identity_free(id);
		strlcpy(reason, "the token's role is not allowed", reasonlen);
		return false;
	}
	if (id->claims == NULL || id->rls_claims == NULL)
	{
		rt_identity_free(id);
		strlcpy(reason, "out of memory", reasonlen);
		return false;
	}
	return true;
}

typedef struct AuthzArgs
{
	const RtIdentity *id;
	const char *topic;
	const char *action;
	const char *event; /* publish: the client message's event; NULL: none */
	bool want_handler; /* publish: look up the topic's handler too */
	bool allowed;
	Oid handler;
} AuthzArgs;

static void
authorize_spi(void *p)
{
	AuthzArgs *a = p;
	Oid types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum args[3];
	bool isnull;

	args[0] = CStringGetTextDatum(a->id->role);
	args[1] = CStringGetTextDatum(a->id->claims);
	args[2] = CStringGetTextDatum(a->event ? a->event : "");
	if (SPI_execute_with_args("SELECT pg_catalog.set_config('role', $1, true), "
							  "pg_catalog.set_config('request.jwt.claims', $2, true), "
							  "pg_catalog.set_config('request.realtime.event', $3, true)",
							  3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not switch role");
	rt_role_lock();
	args[0] = CStringGetTextDatum(a->topic);
	args[1] = CStringGetTextDatum(a->action);
	if (SPI_execute_with_args("SELECT bv_realtime.authorize($1, $2)", 2, types, args, NULL, true,
							  1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not authorize");
	a->allowed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
											&isnull)) &&
				 !isnull;
	if (!a->allowed || !a->want_handler)
		return;
	/* 0.4.0's publish_handler(); absent while the extension is older */
	if (SPI_execute("SELECT pg_catalog.to_regprocedure('bv_realtime.publish_handler(text)') IS NOT NULL",
					true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return;
	if (SPI_execute_with_args("SELECT bv_realtime.publish_handler($1)::oid", 1, types, args, NULL,
							  true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look up the topic's handler");
	a->handler = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												&isnull));
	if (isnull)
		a->handler = InvalidOid;
}

/*
 * rt_authorize
 *		May this identity do action on topic?  Runs bv_realtime.authorize()
 *		as the client's role; an error in the policy denies.  For a client
 *		message (publish) event is its event name, which the policy reads
 *		as setting request.realtime.event (empty otherwise), and *handler (when
 *		not NULL) receives the SQL handler that answers it (InvalidOid: the
 *		message is broadcast).
 */
bool
rt_authorize(const RtIdentity *id, const char *topic, const char *action, const char *event,
			 Oid *handler, char *reason, size_t reasonlen)
{
	AuthzArgs a = {id, topic, action, event, handler != NULL, false, InvalidOid};
	char detail[RT_ERRLEN];

	if (!rt_run_guarded(authorize_spi, &a, detail, sizeof(detail), NULL))
	{
		ereport(LOG, (errmsg("bv_realtime: topic authorization failed for role \"%s\": %s",
							 id->role, detail)));
		strlcpy(reason, "authorization failed", reasonlen);
		return false;
	}
	if (handler)
		*handler = a.handler;
	if (!a.allowed)
	{
		strlcpy(reason, "not allowed", reasonlen);
		return false;
	}
	return true;
}

typedef struct RevokedArgs
{
	TimestampTz since;
	TimestampTz newest;
	List *jtis;
	MemoryContext cxt;
} RevokedArgs;

static void
revoked_spi(void *p)
{
	RevokedArgs *a = p;
	Oid types[1] = {TIMESTAMPTZOID};
	Datum args[1];
	uint64 i;

	args[0] = TimestampTzGetDatum(a->since);
	/* A minute of overlap: revoked_at is its transaction's start, not its commit. */
	if (SPI_execute_with_args("SELECT jti, revoked_at FROM bv.jwt_revocations "
							  "WHERE revoked_at OPERATOR(pg_catalog.>) ($1 OPERATOR(pg_catalog.-) interval '1 minute')",
							  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read bv.jwt_revocations");
	for (i = 0; i < SPI_processed; i++)
	{
		bool isnull;
		char *jti = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		TimestampTz at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));

		if (jti)
		{
			MemoryContext spi = MemoryContextSwitchTo(a->cxt);

			a->jtis = lappend(a->jtis, pstrdup(jti));
			MemoryContextSwitchTo(spi);
		}
		if (!isnull && at > a->newest)
			a->newest = at;
	}
}

/*
 * rt_revoked_since
 *		jti values revoked recently (since *since, with overlap); moves
 *		*since forward.  NIL on error (logged).
 */
List *
rt_revoked_since(TimestampTz *since)
{
	RevokedArgs a = {*since, *since, NIL, CurrentMemoryContext};
	char detail[RT_ERRLEN];

	if (!rt_run_guarded(revoked_spi, &a, detail, sizeof(detail), NULL))
	{
		ereport(LOG, (errmsg("bv_realtime could not read revocations: %s", detail)));
		return NIL;
	}
	*since = a.newest;
	return a.jtis;
}
