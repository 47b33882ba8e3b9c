/*-------------------------------------------------------------------------
 *
 * bv_ident.c
 *	  Validation of the identifiers that travel with a request.
 *
 * An actor name ends up in audit rows, CDC envelopes and log lines, so it
 * must be non-empty, bounded and free of control characters (a newline in
 * an actor would forge a log line) and of the invisible Unicode characters
 * that change how text around them is displayed: bidirectional overrides,
 * embeddings, isolates and marks, zero-width characters, line and paragraph
 * separators, the byte order mark and C1 controls.  "\u202Eecila" is shown
 * as "alice" in an audit report.  A W3C trace context is accepted only in
 * the exact form of the Trace Context recommendation, version 00: anything
 * else is ignored by tracers, and so by us.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "bv_common.h"

/*
 * Does UTF-8 "s" hold a C1 control or a Unicode character that is invisible
 * yet changes the display of the text around it?  U+0080-U+009F, U+061C,
 * U+200B-U+200F, U+2028-U+202E, U+2060-U+2064, U+2066-U+2069, U+FEFF.
 */
static bool
has_invisible_format_char(const char *s)
{
	const unsigned char *p;

	for (p = (const unsigned char *) s; *p; p++)
	{
		if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F)
			return true;
		if (p[0] == 0xD8 && p[1] == 0x9C)
			return true;
		if (p[0] == 0xE2 && p[1] == 0x80 && p[2] != 0 &&
			((p[2] >= 0x8B && p[2] <= 0x8F) || (p[2] >= 0xA8 && p[2] <= 0xAE)))
			return true;
		if (p[0] == 0xE2 && p[1] == 0x81 && p[2] != 0 &&
			((p[2] >= 0xA0 && p[2] <= 0xA4) || (p[2] >= 0xA6 && p[2] <= 0xA9)))
			return true;
		if (p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
			return true;
	}
	return false;
}

/*
 * bv_actor_problem
 *		NULL when "actor" is acceptable as an actor name, otherwise a short
 *		sentence saying what is wrong with it, for an errdetail.
 */
const char *
bv_actor_problem(const char *actor)
{
	const unsigned char *p;

	if (actor == NULL || actor[0] == '\0')
		return "An actor must not be empty.";
	if (pg_mbstrlen(actor) > BV_ACTOR_MAX_CHARS)
		return psprintf("An actor must be at most %d characters long.",
						BV_ACTOR_MAX_CHARS);
	for (p = (const unsigned char *) actor; *p; p++)
	{
		if (*p < 0x20 || *p == 0x7f)
			return "An actor must not contain control characters.";
	}
	if (GetDatabaseEncoding() == PG_UTF8 && has_invisible_format_char(actor))
		return "An actor must not contain invisible formatting characters (such as U+202E, right-to-left override).";
	return NULL;
}

static inline bool
is_lower_hex(const char *s, int len, bool *all_zero)
{
	int i;

	*all_zero = true;
	for (i = 0; i < len; i++)
	{
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		if (c != '0')
			*all_zero = false;
	}
	return true;
}

/*
 * bv_traceparent_is_valid
 *		Is "value" a well-formed version-00 traceparent?
 *
 * The format is "00-" 32 hex trace-id "-" 16 hex parent-id "-" 2 hex flags,
 * lower case only; an all-zero trace-id or parent-id is invalid.
 */
bool
bv_traceparent_is_valid(const char *value)
{
	bool zero;

	if (value == NULL || strlen(value) != BV_TRACEPARENT_LEN)
		return false;
	if (value[0] != '0' || value[1] != '0' || value[2] != '-' ||
		value[35] != '-' || value[52] != '-')
		return false;
	if (!is_lower_hex(value + 3, 32, &zero) || zero)
		return false;
	if (!is_lower_hex(value + 36, 16, &zero) || zero)
		return false;
	return is_lower_hex(value + 53, 2, &zero);
}
