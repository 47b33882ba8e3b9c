/*-------------------------------------------------------------------------
 *
 * trace.c
 *	  bv.trace_context(): the W3C traceparent of the current request.
 *
 * Audit rows and CDC message headers carry the trace context of the request
 * that made a change, so that a change can be followed from the HTTP call
 * that caused it to the Kafka consumer that reacted to it (OpenTelemetry).
 * The context is taken from the "bv.traceparent" setting when a client set
 * one (validated by its check hook), else from the "traceparent" header that
 * PostgREST exposes in "request.headers".
 *
 * A header that is not a valid traceparent is ignored, as the W3C Trace
 * Context recommendation requires of every participant; so is a headers
 * document that is not JSON, since tracing must never fail a request.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "bv_common.h"
#include "bv_core.h"

static BvDerivedCache headers_cache;

/*
 * The valid traceparent header in the given headers text, or NULL.
 */
static const char *
header_traceparent(const char *headers)
{
	const char *cached;
	char *value;
	JsonTokenType type;

	if (bv_cache_lookup(&headers_cache, headers, &cached))
		return cached;

	if (bv_json_top_field(headers, "traceparent", &value, &type) != JSON_SUCCESS ||
		type != JSON_TOKEN_STRING || !bv_traceparent_is_valid(value))
		value = NULL;

	bv_cache_store(&headers_cache, headers, value);
	bv_cache_lookup(&headers_cache, headers, &cached);
	return cached;
}

PG_FUNCTION_INFO_V1(bv_trace_context);

/*
 * bv.trace_context(): the request's traceparent, or NULL when none was given.
 */
Datum
bv_trace_context(PG_FUNCTION_ARGS)
{
	/* bv_core's own setting, read from its variable: no lookup by name. */
	const char *value = bv_traceparent_setting;
	const char *headers;

	if (value != NULL && value[0] == '\0')
		value = NULL;
	if (value == NULL && (headers = bv_guc_get_nonempty("request.headers")) != NULL)
		value = header_traceparent(headers);

	if (value == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(value));
}
