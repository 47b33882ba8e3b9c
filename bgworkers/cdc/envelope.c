/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  wal2json format-version 2 messages in, bv_cdc envelopes out.
 *
 * wal2json v2 sends one JSON object per change ("I", "U", "D", "T"), per
 * transaction boundary ("B", "C") and per logical decoding message ("M").
 * w2j_parse() reads one with the server's own JSON lexer (common/jsonapi.h)
 * and keeps every scalar's text exactly as wal2json wrote it: numbers are
 * never converted through double, so numeric(38,10) and int8 values reach
 * Kafka digit for digit.
 *
 * cdc_build_envelope() writes the envelope documented in
 * docs/cdc-envelope.md: op, source, key, before, after and "unchanged" (the
 * columns whose unchanged TOAST value wal2json left out of an update; they
 * are listed there and absent from "after", never passed off as null).
 *
 * Concurrency: none; only the worker calls this.  Memory: everything is
 * allocated in CurrentMemoryContext, which the worker resets for each
 * message it reads from the stream.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/json.h"

#include "bv_cdc.h"

typedef enum W2jArray
{
	W2J_NONE,
	W2J_COLUMNS,
	W2J_IDENTITY,
	W2J_PK
} W2jArray;

typedef struct W2jState
{
	W2jMessage *msg;
	int depth;
	char *field;    /* current field name at depth 1 */
	char *colfield; /* current field name at depth 3 */
	W2jArray array; /* which array we are in, at depth 2 */
	W2jColumn *col; /* column being filled, at depth 3 */
	int cap[4];     /* capacity of each array */
	bool bad;
} W2jState;

static void
w2j_object_start(void *state)
{
	W2jState *s = state;

	s->depth++;
	if (s->depth == 3 && s->array != W2J_NONE)
	{
		W2jMessage *m = s->msg;
		W2jColumn **arr;
		int *n;

		switch (s->array)
		{
			case W2J_COLUMNS:
				arr = &m->columns;
				n = &m->ncolumns;
				break;
			case W2J_IDENTITY:
				arr = &m->identity;
				n = &m->nidentity;
				break;
			default:
				arr = &m->pk;
				n = &m->npk;
				break;
		}
		if (*arr == NULL)
		{
			s->cap[s->array] = 16;
			*arr = palloc0(sizeof(W2jColumn) * s->cap[s->array]);
		}
		else if (*n >= s->cap[s->array])
		{
			s->cap[s->array] *= 2;
			*arr = repalloc(*arr, sizeof(W2jColumn) * s->cap[s->array]);
		}
		s->col = &(*arr)[(*n)++];
		memset(s->col, 0, sizeof(W2jColumn));
		s->col->vtype = JSON_TOKEN_NULL;
	}
	else if (s->depth != 1)
		s->bad = true;
}

static void
w2j_object_end(void *state)
{
	W2jState *s = state;

	if (s->depth == 3)
		s->col = NULL;
	s->depth--;
}

static void
w2j_array_start(void *state)
{
	W2jState *s = state;

	s->depth++;
	if (s->depth != 2 || s->field == NULL)
	{
		s->bad = true;
		return;
	}
	if (strcmp(s->field, "columns") == 0)
		s->array = W2J_COLUMNS;
	else if (strcmp(s->field, "identity") == 0)
		s->array = W2J_IDENTITY;
	else if (strcmp(s->field, "pk") == 0)
		s->array = W2J_PK;
	else
		s->array = W2J_NONE;
}

static void
w2j_array_end(void *state)
{
	W2jState *s = state;

	s->depth--;
	s->array = W2J_NONE;
}

static void
w2j_field_start(void *state, char *fname, bool isnull)
{
	W2jState *s = state;

	if (s->depth == 1)
		s->field = fname;
	else if (s->depth == 3)
		s->colfield = fname;
}

static void
w2j_scalar(void *state, char *token, JsonTokenType type)
{
	W2jState *s = state;
	W2jMessage *m = s->msg;

	if (s->depth == 3 && s->col != NULL && s->colfield != NULL)
	{
		if (strcmp(s->colfield, "name") == 0)
			s->col->name = token;
		else if (strcmp(s->colfield, "type") == 0)
			s->col->type = token;
		else if (strcmp(s->colfield, "value") == 0)
		{
			s->col->value = token;
			s->col->vtype = type;
		}
		return;
	}
	if (s->depth != 1 || s->field == NULL)
		return;

	if (strcmp(s->field, "action") == 0 && type == JSON_TOKEN_STRING && strlen(token) == 1)
		m->action = token[0];
	else if (strcmp(s->field, "xid") == 0 && type == JSON_TOKEN_NUMBER)
		m->xid = strtoll(token, NULL, 10);
	else if (strcmp(s->field, "lsn") == 0 && type == JSON_TOKEN_STRING)
		m->lsn = token;
	else if (strcmp(s->field, "nextlsn") == 0 && type == JSON_TOKEN_STRING)
		m->nextlsn = token;
	else if (strcmp(s->field, "timestamp") == 0 && type == JSON_TOKEN_STRING)
		m->timestamp = token;
	else if (strcmp(s->field, "schema") == 0 && type == JSON_TOKEN_STRING)
		m->schema = token;
	else if (strcmp(s->field, "table") == 0 && type == JSON_TOKEN_STRING)
		m->table = token;
	else if (strcmp(s->field, "prefix") == 0 && type == JSON_TOKEN_STRING)
		m->prefix = token;
	else if (strcmp(s->field, "content") == 0 && type == JSON_TOKEN_STRING)
		m->content = token;
	else if (strcmp(s->field, "transactional") == 0)
		m->transactional = type == JSON_TOKEN_TRUE;
}

/*
 * w2j_parse
 *		Parse one wal2json v2 message.  false with *err when the text is not
 *		JSON or not shaped as wal2json v2 writes it.
 */
bool
w2j_parse(char *json, int len, W2jMessage *msg, char **err)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen(json, len, PG_UTF8, true);
	JsonSemAction sem;
	W2jState state;
	JsonParseErrorType rc;
	int i;

	memset(msg, 0, sizeof(*msg));
	msg->xid = -1;
	memset(&state, 0, sizeof(state));
	state.msg = msg;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &state;
	sem.object_start = w2j_object_start;
	sem.object_end = w2j_object_end;
	sem.array_start = w2j_array_start;
	sem.array_end = w2j_array_end;
	sem.object_field_start = w2j_field_start;
	sem.scalar = w2j_scalar;

	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		*err = psprintf("invalid JSON from wal2json: %s", json_errdetail(rc, lex));
		return false;
	}
	if (state.bad || msg->action == '\0')
	{
		*err = pstrdup("message is not a wal2json format-version 2 object");
		return false;
	}
	switch (msg->action)
	{
		case 'I':
		case 'U':
		case 'D':
		case 'T':
			if (msg->schema == NULL || msg->table == NULL)
			{
				*err = pstrdup("change without schema or table");
				return false;
			}
			for (i = 0; i < msg->ncolumns; i++)
				if (msg->columns[i].name == NULL)
				{
					*err = pstrdup("column without a name");
					return false;
				}
			for (i = 0; i < msg->nidentity; i++)
				if (msg->identity[i].name == NULL)
				{
					*err = pstrdup("identity column without a name");
					return false;
				}
			break;
		case 'B':
		case 'C':
		case 'M':
			break;
		default:
			*err = psprintf("unknown wal2json action \"%c\"", msg->action);
			return false;
	}
	return true;
}

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
			appendStringInfoString(out, c->value);
			break;
		default:
			appendStringInfoString(out, "null");
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
		appendStringInfoString(out, "null");
		return;
	}
	appendStringInfoChar(out, '{');
	for (i = 0; i < n; i++)
	{
		if (!column_wanted(route, cols[i].name))
			continue;
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		append_json_string(out, cols[i].name);
		appendStringInfoChar(out, ':');
		append_value(out, &cols[i]);
	}
	appendStringInfoChar(out, '}');
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
	appendStringInfoChar(out, '{');
	for (i = 0; i < msg->npk; i++)
	{
		const W2jColumn *c = msg->pk[i].name ? find_column(cols, ncols, msg->pk[i].name) : NULL;

		if (c == NULL)
		{
			resetStringInfo(out);
			return false;
		}
		if (i > 0)
			appendStringInfoChar(out, ',');
		append_json_string(out, c->name);
		appendStringInfoChar(out, ':');
		append_value(out, c);
	}
	appendStringInfoChar(out, '}');
	return true;
}

/*
 * cdc_build_envelope
 *		Write one envelope into out.  before/after are the row images (NULL
 *		when absent); route filters the columns (the key is never filtered);
 *		tr->attnames, when known, lets an update name the columns it lacks.
 */
void
cdc_build_envelope(StringInfo out, char op, const CdcEventSource *src, const W2jMessage *msg,
				   const W2jColumn *before, int nbefore, const W2jColumn *after, int nafter,
				   const CdcRoute *route, const CdcTableRoutes *tr)
{
	StringInfoData key;
	bool first = true;
	int i;

	appendStringInfo(out, "{\"op\":\"%c\",\"source\":{\"version\":\"%s\",\"db\":", op,
					 BV_CDC_VERSION);
	append_json_string(out, src->database);
	appendStringInfoString(out, ",\"schema\":");
	append_json_string(out, msg->schema);
	appendStringInfoString(out, ",\"table\":");
	append_json_string(out, msg->table);
	appendStringInfoString(out, ",\"lsn\":");
	append_json_string(out, src->lsn ? src->lsn : "0/0");
	appendStringInfo(out, ",\"xid\":" INT64_FORMAT ",\"ts_us\":" INT64_FORMAT ",\"ts_ms\":" INT64_FORMAT ",\"seq\":" INT64_FORMAT "}",
					 src->xid, src->ts_us, src->ts_us / 1000, src->seq);

	appendStringInfoString(out, ",\"key\":");
	initStringInfo(&key);
	if (op != 't' && cdc_build_key(&key, msg, op == 'd' ? before : after,
								   op == 'd' ? nbefore : nafter))
		appendBinaryStringInfo(out, key.data, key.len);
	else
		appendStringInfoString(out, "null");
	pfree(key.data);

	appendStringInfoString(out, ",\"before\":");
	append_row(out, before, nbefore, route);
	appendStringInfoString(out, ",\"after\":");
	append_row(out, after, nafter, route);

	/* Columns absent from an update's new row: unchanged TOAST values. */
	appendStringInfoString(out, ",\"unchanged\":[");
	if (msg->action == 'U' && after != NULL && tr != NULL && tr->natts > nafter)
	{
		for (i = 0; i < tr->natts; i++)
		{
			if (find_column(after, nafter, tr->attnames[i]) != NULL ||
				!column_wanted(route, tr->attnames[i]))
				continue;
			if (!first)
				appendStringInfoChar(out, ',');
			first = false;
			append_json_string(out, tr->attnames[i]);
		}
	}
	appendStringInfoString(out, "]}");
}
