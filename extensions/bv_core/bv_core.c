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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "bv_common.h"
#include "bv_core.h"

PG_MODULE_MAGIC;

char *bv_actor_setting = NULL;
char *bv_traceparent_setting = NULL;

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

	MarkGUCPrefixReserved("bv");
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
