/*-------------------------------------------------------------------------
 *
 * bv_core.h
 *	  Shared declarations of the bv_core extension (schema "bv").
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CORE_H
#define BV_CORE_H

#include "postgres.h"

/* Version of this library; the SQL scripts carry the same number. */
#define BV_CORE_VERSION "0.1.0"

/*
 * A one-entry cache from a setting's text to a value derived from it.  The
 * request settings that bv.actor() and bv.trace_context() read change once per
 * request at most, while audit triggers ask for them once per row; comparing
 * the text is much cheaper than parsing it again.  Entries live in
 * TopMemoryContext.
 */
typedef struct BvDerivedCache
{
	char *source; /* setting text the value was derived from */
	char *value;  /* derived value; NULL is a valid result */
} BvDerivedCache;

extern bool bv_cache_lookup(BvDerivedCache *cache, const char *source,
							const char **value);
extern void bv_cache_store(BvDerivedCache *cache, const char *source,
						   const char *value);

/* Settings defined in bv_core.c. */
extern char *bv_actor_setting;
extern char *bv_traceparent_setting;

#endif /* BV_CORE_H */
