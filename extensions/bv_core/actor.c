/*-------------------------------------------------------------------------
 *
 * actor.c
 *	  bv.actor() and bv.set_actor(): who is acting in this transaction;
 *	  bv.current_user_id() and bv.has_scope(), the row-level security
 *	  helpers that read the same settings.
 *
 * Audit triggers and domain functions attribute every change to an actor.
 * bv.actor() answers, in order of precedence:
 *
 *	1. the "bv.actor" setting, normally set transaction-locally by
 *	   bv.set_actor() (a service acting for a user, a pg_cron job naming
 *	   itself);
 *	2. the "sub" claim of "request.jwt.claims", which PostgREST and
 *	   PostGraphile set, transaction-locally, for every request;
 *	3. session_user, for SQL clients that are themselves the actor.
 *
 * A claims document that is not valid JSON, or whose "sub" is not a usable
 * actor, is an error rather than a silent fall-through: attributing a
 * request to the connection's login role would be a wrong audit record.
 *
 * Claims are honoured only where they can have been verified (red-team
 * round 3): "request.jwt.claims" is a placeholder setting that any session
 * may SET, so a login role with direct SQL access could name any user and
 * pass as them to owner row-level security and audit records.  A session
 * whose session user is neither a superuser nor a member of
 * bv_authenticator (PostgREST's login, whose requests bv.pre_request()
 * verifies) gets 42501 when it has claims; services name a user with
 * bv.set_actor() instead.
 *
 * bv.actor() runs for every audited statement, so it avoids repeated work:
 * "bv.actor" is read from the variable bv_core defines for it, not looked
 * up by name; the parse of the claims is cached against their text (see
 * BvDerivedCache), which does not change within one request; and the
 * session user's name is kept until that role's pg_authid row changes (a
 * syscache callback) or SET SESSION AUTHORIZATION names another role.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/syscache.h"

#include "bv_common.h"
#include "bv_core.h"

static BvDerivedCache claims_cache;

/* The session user's name, for as long as session_name_valid holds. */
static Oid session_name_role = InvalidOid;
static bool session_name_valid = false;
static bool session_name_callback = false;
static char session_name[NAMEDATALEN];

/* Syscache callback: a role was changed (renamed, dropped) somewhere. */
static void
session_name_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	session_name_valid = false;
}

/*
 * The name of the session user.  A change to any role invalidates it; the
 * flag is set before the lookup, so an invalidation that arrives during the
 * lookup is not lost.
 */
static const char *
session_user_name(void)
{
	Oid role = GetSessionUserId();

	if (!session_name_valid || session_name_role != role)
	{
		if (!session_name_callback)
		{
			CacheRegisterSyscacheCallback(AUTHOID, session_name_invalidate, (Datum) 0);
			session_name_callback = true;
		}
		session_name_valid = true;
		session_name_role = role;
		strlcpy(session_name, GetUserNameFromId(role, false), NAMEDATALEN);
	}
	return session_name;
}

/*
 * Check an actor given by a caller and raise 22023 if it is unusable.
 * "origin" names where it came from, for the message.
 */
static inline void
CheckActor(const char *actor, const char *origin)
{
	const char *problem = bv_actor_problem(actor);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid actor in %s", origin),
				 errdetail("%s", problem),
				 errhint("Use the stable id of the user or service, such as the \"sub\" claim of its token.")));
}

/*
 * The "sub" claim of the given claims text, or NULL when there is none.
 */
static const char *
claims_subject(const char *claims)
{
	const char *cached;
	char *sub;
	JsonTokenType type;

	if (bv_cache_lookup(&claims_cache, claims, &cached))
		return cached;

	if (bv_json_top_field(claims, "sub", &sub, &type) != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request.jwt.claims is not valid JSON"),
				 errhint("Set request.jwt.claims to the JSON object of the verified token's claims, as PostgREST does.")));

	if (sub != NULL && type != JSON_TOKEN_STRING)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid actor in the \"sub\" claim of request.jwt.claims"),
				 errdetail("The \"sub\" claim must be a string."),
				 errhint("Issue tokens whose \"sub\" claim is the user's id as a string.")));
	if (sub != NULL)
		CheckActor(sub, "the \"sub\" claim of request.jwt.claims");

	bv_cache_store(&claims_cache, claims, sub);
	bv_cache_lookup(&claims_cache, claims, &cached);
	return cached;
}

PG_FUNCTION_INFO_V1(bv_actor);

/*
 * May this session's request.jwt.claims name the actor?  Only sessions of a
 * superuser or of a member of bv_authenticator; 42501 otherwise.
 */
static void
CheckClaimsSource(void)
{
	Oid session = GetSessionUserId();
	Oid authenticator;

	if (superuser_arg(session))
		return;
	authenticator = get_role_oid("bv_authenticator", true);
	if (OidIsValid(authenticator) && is_member_of_role(session, authenticator))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("request.jwt.claims is honoured only in sessions of bv_authenticator"),
			 errdetail("Any session can set request.jwt.claims; in a session of \"%.64s\" they "
					   "were not verified and name nobody.",
					   session_user_name()),
			 errhint("Send requests through PostgREST; a service acting for a user names it with "
					 "bv.set_actor().")));
}

/*
 * bv.actor(): the actor of the current transaction (see file header).
 */
Datum
bv_actor(PG_FUNCTION_ARGS)
{
	const char *actor = bv_actor_setting;
	const char *claims;

	if (actor != NULL && actor[0] != '\0')
		PG_RETURN_TEXT_P(cstring_to_text(actor));

	claims = bv_guc_get_nonempty("request.jwt.claims");
	if (claims != NULL)
	{
		CheckClaimsSource();
		actor = claims_subject(claims);
		if (actor != NULL)
			PG_RETURN_TEXT_P(cstring_to_text(actor));
	}

	PG_RETURN_TEXT_P(cstring_to_text(session_user_name()));
}

PG_FUNCTION_INFO_V1(bv_set_actor);

/*
 * bv.set_actor(actor text): make "actor" the actor until the end of the
 * current transaction, and return it.
 */
Datum
bv_set_actor(PG_FUNCTION_ARGS)
{
	char *actor;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("actor must not be null"),
				 errhint("Pass the id of the user or service that is acting.")));

	actor = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CheckActor(actor, "bv.set_actor()");

	/*
	 * The setting is PGC_SUSET; EXECUTE on this function is the privilege
	 * that allows setting it, so we set it with superuser context.
	 */
	(void) set_config_option("bv.actor", actor, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);

	PG_RETURN_TEXT_P(cstring_to_text(actor));
}

PG_FUNCTION_INFO_V1(bv_current_user_id);

/*
 * bv.current_user_id(): the user the request acts for, for owner-based
 * row-level security: the bv.actor setting, else the "sub" claim of
 * request.jwt.claims, else NULL (anonymous).  Unlike bv.actor() there is
 * no session_user fallback.  Malformed claims raise 22023 (as in
 * bv.actor()), never a raw JSON syntax error (issue #17).
 */
Datum
bv_current_user_id(PG_FUNCTION_ARGS)
{
	const char *actor = bv_actor_setting;
	const char *claims;

	if (actor != NULL && actor[0] != '\0')
		PG_RETURN_TEXT_P(cstring_to_text(actor));
	claims = bv_guc_get_nonempty("request.jwt.claims");
	if (claims != NULL)
	{
		CheckClaimsSource();
		actor = claims_subject(claims);
		if (actor != NULL)
			PG_RETURN_TEXT_P(cstring_to_text(actor));
	}
	PG_RETURN_NULL();
}

static BvDerivedCache scope_cache;

/*
 * The "scope" claim of the given claims text ("" when there is none or it
 * is not a string); 22023 when the claims are not valid JSON.
 */
static const char *
claims_scope(const char *claims)
{
	const char *cached;
	char *scope;
	JsonTokenType type;

	if (bv_cache_lookup(&scope_cache, claims, &cached))
		return cached;
	if (bv_json_top_field(claims, "scope", &scope, &type) != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request.jwt.claims is not valid JSON"),
				 errhint("Set request.jwt.claims to the JSON object of the verified token's claims, as PostgREST does.")));
	bv_cache_store(&scope_cache, claims, scope != NULL && type == JSON_TOKEN_STRING ? scope : "");
	bv_cache_lookup(&scope_cache, claims, &cached);
	return cached;
}

PG_FUNCTION_INFO_V1(bv_has_scope);

/*
 * bv.has_scope(scope text) (STRICT): does the space-separated "scope" claim
 * of request.jwt.claims contain scope?  False without claims.
 */
Datum
bv_has_scope(PG_FUNCTION_ARGS)
{
	char *want = text_to_cstring(PG_GETARG_TEXT_PP(0));
	size_t want_len = strlen(want);
	const char *claims = bv_guc_get_nonempty("request.jwt.claims");
	const char *p;

	if (claims == NULL || want_len == 0)
		PG_RETURN_BOOL(false);
	CheckClaimsSource();
	p = claims_scope(claims);
	while (*p != '\0')
	{
		size_t len = strcspn(p, " ");

		if (len == want_len && memcmp(p, want, len) == 0)
			PG_RETURN_BOOL(true);
		p += len;
		while (*p == ' ')
			p++;
	}
	PG_RETURN_BOOL(false);
}
