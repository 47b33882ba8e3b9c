/*-------------------------------------------------------------------------
 *
 * bv_json.c
 *	  Extracting one top-level field from a JSON text in a single pass.
 *
 * Request settings that PostgREST and PostGraphile pass to the database
 * ("request.jwt.claims", "request.headers") are JSON objects held as text.
 * Hot paths such as bv.actor(), which audit triggers call for every row,
 * need just one member of them.  Building a jsonb value for that would
 * allocate the whole document; instead we drive PostgreSQL's own JSON parser
 * (common/jsonapi.h) with semantic actions that remember the wanted member
 * and ignore the rest.  The parser also validates the whole text, so a
 * malformed document is reported rather than half-read.
 *
 * As with jsonb, when a key occurs more than once the last occurrence wins.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "bv_common.h"

typedef struct TopFieldState
{
	const char *key;          /* member wanted */
	int depth;                /* nesting of objects and arrays */
	bool in_key;              /* the scalar that follows is the value */
	char *value;              /* de-escaped value, or NULL */
	JsonTokenType value_type; /* token type of value; JSON_TOKEN_END if
								 * absent or not a scalar */
} TopFieldState;

static void
top_field_nest(void *arg)
{
	TopFieldState *state = (TopFieldState *) arg;

	/* An object or array as the wanted member's value: not a scalar. */
	if (state->in_key && state->depth == 1)
	{
		state->value = NULL;
		state->value_type = JSON_TOKEN_OBJECT_START;
		state->in_key = false;
	}
	state->depth++;
}

static void
top_field_unnest(void *arg)
{
	((TopFieldState *) arg)->depth--;
}

static void
top_field_start(void *arg, char *fname, bool isnull)
{
	TopFieldState *state = (TopFieldState *) arg;

	if (state->depth == 1 && strcmp(fname, state->key) == 0)
		state->in_key = true;
}

static void
top_field_scalar(void *arg, char *token, JsonTokenType tokentype)
{
	TopFieldState *state = (TopFieldState *) arg;

	if (state->in_key && state->depth == 1)
	{
		state->value = (tokentype == JSON_TOKEN_NULL) ? NULL : token;
		state->value_type = tokentype;
		state->in_key = false;
	}
}

/*
 * bv_json_top_field
 *		Parse "json" and find member "key" of its top-level object.
 *
 * Returns the parser's verdict: anything but JSON_SUCCESS means the text is
 * not valid JSON and *value is left NULL.  On success *value is the
 * de-escaped scalar (palloc'd), or NULL when the member is missing, is JSON
 * null, is not a scalar, or the document is not an object; *value_type tells
 * which (JSON_TOKEN_END when missing).
 */
JsonParseErrorType
bv_json_top_field(const char *json, const char *key, char **value,
				  JsonTokenType *value_type)
{
	TopFieldState state = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;
	JsonParseErrorType result;

	state.key = key;
	state.value_type = JSON_TOKEN_END;

	sem.semstate = &state;
	sem.object_start = top_field_nest;
	sem.object_end = top_field_unnest;
	sem.array_start = top_field_nest;
	sem.array_end = top_field_unnest;
	sem.object_field_start = top_field_start;
	sem.scalar = top_field_scalar;

	lex = makeJsonLexContextCstringLen(unconstify(char *, json), strlen(json),
									   GetDatabaseEncoding(), true);
	result = pg_parse_json(lex, &sem);

	if (result != JSON_SUCCESS)
	{
		state.value = NULL;
		state.value_type = JSON_TOKEN_END;
	}
	*value = state.value;
	if (value_type)
		*value_type = state.value_type;
	return result;
}
