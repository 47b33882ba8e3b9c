/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  bv_cdc envelopes and message keys from parsed wal2json messages
 *	  (wal2json.c), and wal2json's commit timestamps.
 *
 * cdc_build_envelope() writes the envelope documented in
 * docs/cdc-envelope.md: op, source, key, before, after and "unchanged" (the
 * columns whose unchanged TOAST value wal2json left out of an update; they
 * are listed there and absent from "after", never passed off as null).
 * Values are copied exactly as wal2json wrote them.
 *
 * This runs once per change and route, so it appends with inline
 * helpers and pg_lltoa rather than format strings.
 *
 * Concurrency: none; only the worker calls this.  Memory: everything is
 * allocated in CurrentMemoryContext, which the worker resets for each
 * message it reads from the stream.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "cdc.h"

static int64
days_from_civil(int y, int m, int d)
{
	int64 era;
	int yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (int) (y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/*
 * cdc_parse_timestamp
 *		wal2json's commit timestamp ("2026-01-02 03:04:05.123456+00", ISO
 *		style; the stream runs with TimeZone=UTC) to microseconds since the
 *		Unix epoch.
 */
bool
cdc_parse_timestamp(const char *ts, int64 *unix_us)
{
	int y, mo, d, h, mi, s, n = 0;
	int64 frac = 0;
	int digits = 0;
	int off_h = 0, off_m = 0, sign = 1;
	const char *p;

	if (ts == NULL || sscanf(ts, "%d-%d-%d %d:%d:%d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6)
		return false;
	p = ts + n;
	if (*p == '.')
	{
		p++;
		while (*p >= '0' && *p <= '9')
		{
			if (digits < 6)
			{
				frac = frac * 10 + (*p - '0');
				digits++;
			}
			p++;
		}
		while (digits++ < 6)
			frac *= 10;
	}
	if (*p == '+' || *p == '-')
	{
		sign = *p == '-' ? -1 : 1;
		p++;
		if (sscanf(p, "%2d", &off_h) != 1)
			return false;
		p += 2;
		if (*p == ':')
			p++;
		if (*p >= '0' && *p <= '9')
			off_m = (p[0] - '0') * 10 + (p[1] - '0');
	}
	*unix_us = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) -
				sign * (off_h * 3600 + off_m * 60)) *
				   INT64CONST(1000000) +
			   frac;
	return true;
}

/*
 * appendBinaryStringInfo, inline: envelopes are appended a few bytes at a
 * time.
 */
static inline void
append_bytes(StringInfo out, const char *data, int n)
{
	if (out->len + n >= out->maxlen)
		enlargeStringInfo(out, n);
	memcpy(out->data + out->len, data, n);
	out->len += n;
	out->data[out->len] = '\0';
}

/*
 * escape_json, with a fast path for the common string that needs no
 * escaping (escape_json appends character by character).
 */
static void
append_json_string(StringInfo out, const char *str)
{
	const char *p;
	size_t len;

	for (p = str; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == '"' || *p == '\\')
		{
			escape_json(out, str);
			return;
		}
	len = p - str;
	enlargeStringInfo(out, len + 2);
	out->data[out->len++] = '"';
	memcpy(out->data + out->len, str, len);
	out->len += len;
	out->data[out->len++] = '"';
	out->data[out->len] = '\0';
}

#define append_literal(out, lit) append_bytes((out), (lit), sizeof(lit) - 1)

/* An integer, as INT64_FORMAT writes it. */
static inline void
append_int64(StringInfo out, int64 v)
{
	char buf[MAXINT8LEN + 1];

	append_bytes(out, buf, pg_lltoa(v, buf));
}

/* Append one value as JSON, exactly as wal2json wrote it. */
static void
append_value(StringInfo out, const W2jColumn *c)
{
	switch (c->vtype)
	{
		case JSON_TOKEN_STRING:
			append_json_string(out, c->value);
			break;
		case JSON_TOKEN_NUMBER:
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			append_bytes(out, c->value, strlen(c->value));
			break;
		default:
			append_literal(out, "null");
			break;
	}
}

static bool
name_in(const char *name, List *names)
{
	ListCell *lc;

	foreach (lc, names)
		if (strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/* Does the route publish this column? */
static bool
column_wanted(const CdcRoute *route, const char *name)
{
	if (route == NULL)
		return true;
	if (route->include_columns != NIL && !name_in(name, route->include_columns))
		return false;
	if (route->exclude_columns != NIL && name_in(name, route->exclude_columns))
		return false;
	return true;
}

static void
append_row(StringInfo out, const W2jColumn *cols, int n, const CdcRoute *route)
{
	bool first = true;
	int i;

	if (cols == NULL)
	{
		append_literal(out, "null");
		return;
	}
	appendStringInfoCharMacro(out, '{');
	for (i = 0; i < n; i++)
	{
		if (!column_wanted(route, cols[i].name))
			continue;
		if (!first)
			appendStringInfoCharMacro(out, ',');
		first = false;
		append_json_string(out, cols[i].name);
		appendStringInfoCharMacro(out, ':');
		append_value(out, &cols[i]);
	}
	appendStringInfoCharMacro(out, '}');
}

static const W2jColumn *
find_column(const W2jColumn *cols, int n, const char *name)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(cols[i].name, name) == 0)
			return &cols[i];
	return NULL;
}

/*
 * cdc_build_key
 *		The message key: a JSON object of the primary key columns taken from
 *		cols, in key order.  false (key left empty) when the table has no
 *		primary key or a key column is missing from cols.
 */
bool
cdc_build_key(StringInfo out, const W2jMessage *msg, const W2jColumn *cols, int ncols)
{
	int i;

	if (msg->npk == 0 || cols == NULL)
		return false;
	appendStringInfoCharMacro(out, '{');
	for (i = 0; i < msg->npk; i++)
	{
		const W2jColumn *c = msg->pk[i].name ? find_column(cols, ncols, msg->pk[i].name) : NULL;

		if (c == NULL)
		{
			resetStringInfo(out);
			return false;
		}
		if (i > 0)
			appendStringInfoCharMacro(out, ',');
		append_json_string(out, c->name);
		appendStringInfoCharMacro(out, ':');
		append_value(out, c);
	}
	appendStringInfoCharMacro(out, '}');
	return true;
}

/*
 * cdc_build_envelope
 *		Write one envelope into out.  before/after are the row images (NULL
 *		when absent); key is the message key (cdc_build_key), NULL for none;
 *		route filters the columns (the key is never filtered); cols, the
 *		columns the change's table had when it was written (a writer note,
 *		see stream.c), lets an update name the columns it lacks.
 */
void
cdc_build_envelope(StringInfo out, char op, const CdcEventSource *src, const W2jMessage *msg,
				   const W2jColumn *before, int nbefore, const W2jColumn *after, int nafter,
				   const CdcRoute *route, const CdcColumnNames *cols, const char *key,
				   int keylen)
{
	bool first = true;
	int i;

	append_literal(out, "{\"op\":\"");
	appendStringInfoCharMacro(out, op);
	append_literal(out, "\",\"source\":{\"version\":\"" BV_CDC_VERSION "\",\"db\":");
	append_json_string(out, src->database);
	append_literal(out, ",\"schema\":");
	append_json_string(out, msg->schema);
	append_literal(out, ",\"table\":");
	append_json_string(out, msg->table);
	append_literal(out, ",\"lsn\":");
	append_json_string(out, src->lsn ? src->lsn : "0/0");
	append_literal(out, ",\"xid\":");
	append_int64(out, src->xid);
	append_literal(out, ",\"ts_us\":");
	append_int64(out, src->ts_us);
	append_literal(out, ",\"ts_ms\":");
	append_int64(out, src->ts_us / 1000);
	append_literal(out, ",\"seq\":");
	append_int64(out, src->seq);

	append_literal(out, "},\"key\":");
	if (key != NULL)
		append_bytes(out, key, keylen);
	else
		append_literal(out, "null");

	append_literal(out, ",\"before\":");
	append_row(out, before, nbefore, route);
	append_literal(out, ",\"after\":");
	append_row(out, after, nafter, route);

	/* Columns absent from an update's new row: unchanged TOAST values. */
	append_literal(out, ",\"unchanged\":[");
	if (msg->action == 'U' && after != NULL && cols != NULL && cols->n > nafter)
	{
		for (i = 0; i < cols->n; i++)
		{
			if (find_column(after, nafter, cols->names[i]) != NULL ||
				!column_wanted(route, cols->names[i]))
				continue;
			if (!first)
				appendStringInfoCharMacro(out, ',');
			first = false;
			append_json_string(out, cols->names[i]);
		}
	}
	append_literal(out, "]}");
}
