/*-------------------------------------------------------------------------
 *
 * bv_common.h
 *	  Declarations of BitVelocity's internal C library (libbvcommon.a).
 *
 * Every BitVelocity extension links this small static library instead of
 * carrying its own copy of these helpers.  It holds only code that more than
 * one extension needs: reading settings, picking a field out of a JSON
 * document without building a jsonb value, and validating the identifiers
 * that travel with a request (actors, W3C trace contexts).
 *
 * Nothing here keeps state between calls; callers own every allocation,
 * which is made in CurrentMemoryContext.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_COMMON_H
#define BV_COMMON_H

#include "postgres.h"

#include "common/jsonapi.h"

/* Longest actor name accepted, in characters (OIDC "sub" values fit). */
#define BV_ACTOR_MAX_CHARS 256

/* Length of a version-00 W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>. */
#define BV_TRACEPARENT_LEN 55

/* bv_guc.c */
extern const char *bv_guc_get_nonempty(const char *name);

/* bv_json.c */
extern JsonParseErrorType bv_json_top_field(const char *json, const char *key,
											char **value,
											JsonTokenType *value_type);

/* bv_ident.c */
extern const char *bv_actor_problem(const char *actor);
extern bool bv_traceparent_is_valid(const char *value);

#endif /* BV_COMMON_H */
