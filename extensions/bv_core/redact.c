/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keeps secrets that a failing statement carries out of error reports
 *	  (issue #17, attack review).
 *
 * bv_core's own errors never quote a key, a secret or a token and hide
 * their statement (errhidestmt).  Errors raised by PostgreSQL itself while
 * such a statement runs did not: a bad timestamp or a duplicate kid in
 *   INSERT INTO bv.jwt_keys (kid, alg, key, ...) VALUES (..., '<secret>', ...)
 * wrote the whole statement to the server log under log_min_error_statement,
 * and a malformed COPY line into bv.jwt_keys was quoted in full in the
 * CONTEXT line ("COPY jwt_keys, line 1: "...<secret>..."") to the client
 * and the log, before any trigger could look at the row.
 *
 * An emit_log_hook, installed in every backend that loads the library
 * (always, since the suite preloads it), therefore:
 *	- hides the statement (as errhidestmt would) of any report while a
 *	  statement that names a table or function holding secrets is running:
 *	  its text contains "jwt_", "secret" or "api_key" (bv.jwt_keys,
 *	  bv.jwt_verify(), bv.secret_set(), bv.secrets, bv.api_key_verify(),
 *	  ...), "password" or "passwd" (a password given in clear, e.g. the
 *	  "sasl.password" that bv_cdc.add_sink() refuses: the refusal itself
 *	  logged it, red-team round 5), or "_sink(" (bv_cdc's add_sink,
 *	  alter_sink and validate_sink: a sink's configuration may hold a token,
 *	  e.g. in a webhook URL's path), case-insensitively;
 *	- withholds the input line of COPY context lines for the tables
 *	  jwt_keys, secrets and api_keys ("COPY jwt_keys, line 1: <withheld>").
 * Both are a superset on purpose: a hidden statement of an unrelated query
 * that merely mentions such a name costs some log detail, a leaked secret
 * costs a rotation.  Statements logged for other reasons (log_statement,
 * log_min_duration_statement) are not errors and are not changed: see
 * docs/security.md.
 *
 * No state, no locks; allocations go to the error's own context, which is
 * current while the hook runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"

#include "bv_core.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/* Does s contain needle, ignoring ASCII case? */
static bool
contains_ci(const char *s, const char *needle)
{
	size_t n = strlen(needle);

	for (; *s; s++)
		if (pg_strncasecmp(s, needle, n) == 0)
			return true;
	return false;
}

/* Does a statement's text name something that holds secrets? */
static bool
names_secret_holder(const char *query)
{
	static const char *const needles[] = {"jwt_", "secret", "api_key", "password", "passwd", "_sink("};
	int i;

	for (i = 0; i < lengthof(needles); i++)
		if (contains_ci(query, needles[i]))
			return true;
	return false;
}

/*
 * The context with the input of "COPY <secret table>, line N..." lines
 * withheld, or NULL when there is nothing to withhold.
 */
static char *
redact_copy_context(const char *context)
{
	static const char *const tables[] = {"jwt_keys", "secrets", "api_keys"};
	StringInfoData out;
	const char *line = context;
	bool changed = false;

	if (strstr(context, "COPY ") == NULL)
		return NULL;
	initStringInfo(&out);
	while (*line)
	{
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t) (eol - line) : strlen(line);
		bool secret_line = false;
		int i;

		if (strncmp(line, "COPY ", 5) == 0)
			for (i = 0; i < lengthof(tables); i++)
			{
				size_t tl = strlen(tables[i]);

				if (len > 5 + tl && strncmp(line + 5, tables[i], tl) == 0 && line[5 + tl] == ',')
					secret_line = true;
			}
		if (secret_line)
		{
			const char *colon = memchr(line, ':', len);

			appendBinaryStringInfo(&out, line, colon ? (int) (colon - line) : (int) len);
			appendStringInfoString(&out, ": <input withheld: the table holds secrets>");
			changed = true;
		}
		else
			appendBinaryStringInfo(&out, line, (int) len);
		if (eol == NULL)
			break;
		appendStringInfoChar(&out, '\n');
		line = eol + 1;
	}
	if (!changed)
	{
		pfree(out.data);
		return NULL;
	}
	return out.data;
}

static void
bv_redact_emit_log(ErrorData *edata)
{
	if (!edata->hide_stmt && debug_query_string != NULL && names_secret_holder(debug_query_string))
		edata->hide_stmt = true;
	if (edata->context != NULL)
	{
		char *redacted = redact_copy_context(edata->context);

		if (redacted != NULL)
			edata->context = redacted;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * bv_redact_init
 *		Install the hook (once per backend, from _PG_init).
 */
void
bv_redact_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = bv_redact_emit_log;
}
