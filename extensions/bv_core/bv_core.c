/*-------------------------------------------------------------------------
 *
 * bv_core.c
 *	  Module entry point of bv_core: settings, version, a small cache.
 *
 * bv_core owns the "bv" prefix of configuration settings.  It defines:
 *
 *	bv.actor		who is acting, for audit and domain code.  Settable only by
 *					superusers or through bv.set_actor(), whose EXECUTE right is
 *					granted to service roles, so that an API user cannot
 *					claim to be somebody else with a plain SET.
 *	bv.traceparent	the W3C trace context of the current request, settable by
 *					anyone (it is a correlation id, not an identity).
 *
 * Values are checked by check hooks, so a malformed value is refused with
 * SQLSTATE 22023 whichever way it is set (SET, set_config, ALTER ROLE).
 *
 * The library may be preloaded (make run does) or loaded on first use; both
 * work, because _PG_init defines the settings in the loading backend.
 *
 * Since 0.2.0 it also defines the security core's settings (bv.jwt_*,
 * bv.rate_limit_buckets, bv.master_key_file), registers the JWT key
 * cache's invalidation callback (jwt_keys.c) and, only when loaded through
 * shared_preload_libraries, installs the rate limiter's shared-memory hooks
 * (ratelimit.c).  Loaded later, the rate limiter reports 55000.  Since
 * 0.3.0 it installs an emit_log_hook (redact.c) that keeps statements and
 * COPY lines that may carry secrets out of error reports.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "bv_common.h"
#include "bv_core.h"

PG_MODULE_MAGIC;

char *bv_actor_setting = NULL;
char *bv_traceparent_setting = NULL;

/* Security core settings (0.2.0); see docs/security.md. */
int bv_jwt_leeway = 30;
int bv_jwt_max_size = 8192;
bool bv_jwt_require_exp = true;
bool bv_jwt_replay_check = false;
char *bv_jwt_issuer = NULL;
char *bv_jwt_audience = NULL;
int bv_rate_limit_buckets = 16384;
char *bv_master_key_file = NULL;
double bv_request_rate = 20.0;
double bv_request_burst = 40.0;

void _PG_init(void);

static bool
check_actor(char **newval, void **extra, GucSource source)
{
	const char *problem;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true; /* empty means "no actor set" */
	problem = bv_actor_problem(*newval);
	if (problem != NULL)
	{
		GUC_check_errdetail("%s", problem);
		GUC_check_errhint("Use the stable id of the user or service, such as the \"sub\" claim of its token.");
		return false;
	}
	return true;
}

static bool
check_traceparent(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!bv_traceparent_is_valid(*newval))
	{
		GUC_check_errdetail("A traceparent has the form 00-<32 hex digits>-<16 hex digits>-<2 hex digits>, in lower case, with non-zero trace and parent ids.");
		return false;
	}
	return true;
}

/*
 * The settings of the security core.  Those that weaken verification are
 * PGC_SUSET: an API role must not be able to switch off the expiry check
 * for its own session.
 */
static void
DefineSecuritySettings(void)
{
	DefineCustomIntVariable("bv.jwt_leeway",
							"Clock skew tolerated when checking a token's exp, nbf and iat, in seconds.",
							NULL,
							&bv_jwt_leeway,
							30, 0, 600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("bv.jwt_max_size",
							"Largest token bv.jwt_verify() looks at, in bytes.",
							NULL,
							&bv_jwt_max_size,
							8192, 256, 65536,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("bv.jwt_require_exp",
							 "Refuse tokens without an exp claim.",
							 NULL,
							 &bv_jwt_require_exp,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("bv.jwt_replay_check",
							 "Accept each jti only once until the token expires (needs bv_core preloaded).",
							 NULL,
							 &bv_jwt_replay_check,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("bv.jwt_issuer",
							   "Required iss claim of tokens whose key names no issuer; empty: not checked.",
							   NULL,
							   &bv_jwt_issuer,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("bv.jwt_audience",
							   "Audience that tokens' aud claim must name; empty: not checked.",
							   NULL,
							   &bv_jwt_audience,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	/* PGC_POSTMASTER settings can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("bv.rate_limit_buckets",
								"Slots of the shared-memory rate limiter (rounded to a multiple of 64).",
								"Each slot holds one key's token bucket; idle buckets are evicted first.",
								&bv_rate_limit_buckets,
								16384, 512, 4194304,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	DefineCustomRealVariable("bv.request_rate",
							 "Requests per second bv.pre_request() allows each user, API key or client address.",
							 NULL,
							 &bv_request_rate,
							 20.0, 0.001, 1e9,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("bv.request_burst",
							 "Burst of requests bv.pre_request() allows above bv.request_rate.",
							 NULL,
							 &bv_request_burst,
							 40.0, 1.0, 1e9,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("bv.master_key_file",
							   "File holding the 32-byte master key that seals bv.secrets (mode 0600, owned by the server user).",
							   NULL,
							   &bv_master_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, bv_secrets_assign_master_key_file, NULL);
}

void
_PG_init(void)
{
	DefineCustomStringVariable("bv.actor",
							   "Actor of the current transaction, for audit and domain code.",
							   "Set it with bv.set_actor(); bv.actor() falls back to the JWT \"sub\" claim and then to session_user.",
							   &bv_actor_setting,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   check_actor, NULL, NULL);

	DefineCustomStringVariable("bv.traceparent",
							   "W3C traceparent of the current request.",
							   "bv.trace_context() returns it, or else the traceparent request header.",
							   &bv_traceparent_setting,
							   "",
							   PGC_USERSET,
							   GUC_NOT_IN_SAMPLE,
							   check_traceparent, NULL, NULL);

	DefineSecuritySettings();

	MarkGUCPrefixReserved("bv");

	bv_jwt_keys_init();
	bv_redact_init();
	if (process_shared_preload_libraries_in_progress)
		bv_ratelimit_init();
}

/*
 * bv_cache_lookup
 *		If "cache" holds a value derived from exactly "source", return true
 *		and point *value at it.
 */
bool
bv_cache_lookup(BvDerivedCache *cache, const char *source, const char **value)
{
	if (cache->source == NULL || strcmp(cache->source, source) != 0)
		return false;
	*value = cache->value;
	return true;
}

/*
 * bv_cache_store
 *		Remember that "source" yields "value" (which may be NULL).
 */
void
bv_cache_store(BvDerivedCache *cache, const char *source, const char *value)
{
	char *new_source = MemoryContextStrdup(TopMemoryContext, source);
	char *new_value = value ? MemoryContextStrdup(TopMemoryContext, value) : NULL;

	if (cache->source)
		pfree(cache->source);
	if (cache->value)
		pfree(cache->value);
	cache->source = new_source;
	cache->value = new_value;
}

PG_FUNCTION_INFO_V1(bv_version);

/*
 * bv.version(): version of the loaded bv_core library.
 */
Datum
bv_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(BV_CORE_VERSION));
}
