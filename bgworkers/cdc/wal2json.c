/*-------------------------------------------------------------------------
 *
 * wal2json.c
 *	  One wal2json format-version 2 message in, a W2jMessage out.
 *
 * wal2json v2 sends one JSON object per change ("I", "U", "D", "T"), per
 * transaction boundary ("B", "C") and per logical decoding message ("M").
 * Every scalar keeps its text exactly as wal2json wrote it: numbers are
 * never converted through double, so numeric(38,10) and int8 values reach
 * Kafka digit for digit.
 *
 * Two readers produce the same W2jMessage:
 *
 *   - a fast one for the shape wal2json writes: a flat object of scalars
 *     whose "columns", "identity" and "pk" arrays hold flat objects of
 *     scalars.  It decodes strings in place in a private copy of the
 *     message, with no allocation per token, and NUL-terminates every token
 *     where it ends.  At anything else (a \u escape, a nested value it does
 *     not expect, invalid JSON) it gives up without a verdict;
 *   - the server's JSON parser (common/jsonapi.h), which then reads the
 *     message from scratch and decides: it is the reference, and the only
 *     one that reports errors, so error messages do not depend on which
 *     reader ran.
 *
 * Both apply the same rules to what they read (last field wins, unknown
 * fields are ignored, a repeated array appends) and share the checks of
 * the result, in w2j_parse().
 *
 * Concurrency: none; only the worker calls this.  Memory: everything is
 * allocated in CurrentMemoryContext, which the worker resets for each
 * message it reads from the stream; the message's strings point into a
 * copy of the message made there.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "cdc.h"

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

/* ---- what both readers do with what they read ---- */

/* A new, empty column at the end of one of the message's arrays. */
static W2jColumn *
w2j_new_column(W2jState *s)
{
	W2jMessage *m = s->msg;
	W2jColumn **arr;
	W2jColumn *col;
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
		*arr = palloc(sizeof(W2jColumn) * s->cap[s->array]);
	}
	else if (*n >= s->cap[s->array])
	{
		s->cap[s->array] *= 2;
		*arr = repalloc(*arr, sizeof(W2jColumn) * s->cap[s->array]);
	}
	col = &(*arr)[(*n)++];
	memset(col, 0, sizeof(W2jColumn));
	col->vtype = JSON_TOKEN_NULL;
	return col;
}

#define W2J_FIELD_IS(f, flen, lit) ((flen) == sizeof(lit) - 1 && memcmp((f), (lit), sizeof(lit) - 1) == 0)

/* Which array a top-level field (flen bytes) names. */
static W2jArray
w2j_array_of(const char *field, size_t flen)
{
	if (W2J_FIELD_IS(field, flen, "columns"))
		return W2J_COLUMNS;
	if (W2J_FIELD_IS(field, flen, "identity"))
		return W2J_IDENTITY;
	if (W2J_FIELD_IS(field, flen, "pk"))
		return W2J_PK;
	return W2J_NONE;
}

/* A scalar field (flen bytes) of a column object. */
static void
w2j_column_scalar(W2jColumn *col, const char *field, size_t flen, char *token,
				  JsonTokenType type)
{
	if (W2J_FIELD_IS(field, flen, "name"))
		col->name = token;
	else if (W2J_FIELD_IS(field, flen, "type"))
		col->type = token;
	else if (W2J_FIELD_IS(field, flen, "value"))
	{
		col->value = token;
		col->vtype = type;
	}
}

/* A scalar field (flen bytes) of the message object. */
static void
w2j_top_scalar(W2jMessage *m, const char *field, size_t flen, char *token, JsonTokenType type)
{
	if (type == JSON_TOKEN_STRING)
	{
		if (W2J_FIELD_IS(field, flen, "action"))
		{
			if (token[0] != '\0' && token[1] == '\0')
				m->action = token[0];
		}
		else if (W2J_FIELD_IS(field, flen, "lsn"))
			m->lsn = token;
		else if (W2J_FIELD_IS(field, flen, "nextlsn"))
			m->nextlsn = token;
		else if (W2J_FIELD_IS(field, flen, "timestamp"))
			m->timestamp = token;
		else if (W2J_FIELD_IS(field, flen, "schema"))
			m->schema = token;
		else if (W2J_FIELD_IS(field, flen, "table"))
			m->table = token;
		else if (W2J_FIELD_IS(field, flen, "prefix"))
			m->prefix = token;
		else if (W2J_FIELD_IS(field, flen, "content"))
			m->content = token;
	}
	else if (type == JSON_TOKEN_NUMBER && W2J_FIELD_IS(field, flen, "xid"))
		m->xid = strtoll(token, NULL, 10);
	if (W2J_FIELD_IS(field, flen, "transactional"))
		m->transactional = type == JSON_TOKEN_TRUE;
}

/* ---- the reference reader: the server's JSON parser ---- */

static void
w2j_object_start(void *state)
{
	W2jState *s = state;

	s->depth++;
	if (s->depth == 3 && s->array != W2J_NONE)
		s->col = w2j_new_column(s);
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
	s->array = w2j_array_of(s->field, strlen(s->field));
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

	if (s->depth == 3 && s->col != NULL && s->colfield != NULL)
		w2j_column_scalar(s->col, s->colfield, strlen(s->colfield), token, type);
	else if (s->depth == 1 && s->field != NULL)
		w2j_top_scalar(s->msg, s->field, strlen(s->field), token, type);
}

/* Parse with the server's JSON parser; false with *err when it is not JSON. */
static bool
w2j_parse_reference(char *json, int len, W2jState *state, char **err)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen(json, len, PG_UTF8, true);
	JsonSemAction sem;
	JsonParseErrorType rc;

	memset(&sem, 0, sizeof(sem));
	sem.semstate = state;
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
	return true;
}

/* ---- the fast reader ---- */

/*
 * The fast reader works on a copy of the message followed by a NUL byte,
 * which ends every scan below without a bounds check: a NUL is neither
 * white space, nor a digit, nor allowed unescaped in a string.
 */
#define W2J_IS_SPACE(c) ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')
#define W2J_IS_DIGIT(c) ((c) >= '0' && (c) <= '9')

/* What a byte is inside a JSON string. */
#define W2J_PLAIN   0
#define W2J_QUOTE   1
#define W2J_ESCAPE  2
#define W2J_CONTROL 3 /* must be escaped; also the terminating NUL */

static uint8 w2j_class[256];

static void
w2j_init_classes(void)
{
	int c;

	for (c = 0; c < 0x20; c++)
		w2j_class[c] = W2J_CONTROL;
	w2j_class['"'] = W2J_QUOTE;
	w2j_class['\\'] = W2J_ESCAPE;
}

/* The next byte that is not JSON white space, or NULL at the end. */
static inline char *
fast_skip(char *p, const char *end)
{
	while (W2J_IS_SPACE(*p))
		p++;
	return p < end ? p : NULL;
}

/*
 * The string whose opening quote is at *pp, decoded in place and
 * NUL-terminated over its closing quote, its length in *lenp; *pp moves
 * past it.  NULL (give up) for a \u escape, an invalid escape, a control
 * character or a string that does not end.
 */
static char *
fast_string(char **pp, size_t *lenp)
{
	char *start = *pp + 1;
	char *s = start;
	char *out;

	/* The common case: no escape at all. */
	while (w2j_class[(unsigned char) *s] == W2J_PLAIN)
		s++;
	if (*s == '"')
	{
		*s = '\0';
		*pp = s + 1;
		*lenp = s - start;
		return start;
	}

	out = s;
	for (;;)
	{
		char c = *s;

		switch (w2j_class[(unsigned char) c])
		{
			case W2J_PLAIN:
				break;
			case W2J_QUOTE:
				*out = '\0';
				*pp = s + 1;
				*lenp = out - start;
				return start;
			case W2J_ESCAPE:
				switch (*++s)
				{
					case '"':
					case '\\':
					case '/':
						c = *s;
						break;
					case 'b':
						c = '\b';
						break;
					case 'f':
						c = '\f';
						break;
					case 'n':
						c = '\n';
						break;
					case 'r':
						c = '\r';
						break;
					case 't':
						c = '\t';
						break;
					default:
						return NULL; /* \u, invalid, or the end: the reference reader decides */
				}
				break;
			default:
				return NULL;
		}
		*out++ = c;
		s++;
	}
}

/*
 * The number, true, false or null at *pp, NUL-terminated over the byte
 * that ends it; *type says which.  *next is the structural character
 * that follows (',', '}' or ']', past white space) and *pp moves past it.
 * NULL (give up) for anything else.
 */
static char *
fast_bare(char **pp, const char *end, JsonTokenType *type, char *next)
{
	char *start = *pp;
	char *s = start;
	char *q;

	if (*s == 't' || *s == 'f' || *s == 'n')
	{
		const char *word = *s == 't' ? "true" : *s == 'f' ? "false"
														  : "null";
		size_t wlen = strlen(word);

		if ((size_t) (end - s) <= wlen || memcmp(s, word, wlen) != 0)
			return NULL;
		s += wlen;
		*type = *start == 't' ? JSON_TOKEN_TRUE : *start == 'f' ? JSON_TOKEN_FALSE
																: JSON_TOKEN_NULL;
	}
	else
	{
		/* JSON's number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
		if (*s == '-')
			s++;
		if (*s == '0')
			s++;
		else if (*s >= '1' && *s <= '9')
			while (W2J_IS_DIGIT(*s))
				s++;
		else
			return NULL;
		if (*s == '.')
		{
			s++;
			if (!W2J_IS_DIGIT(*s))
				return NULL;
			while (W2J_IS_DIGIT(*s))
				s++;
		}
		if (*s == 'e' || *s == 'E')
		{
			s++;
			if (*s == '+' || *s == '-')
				s++;
			if (!W2J_IS_DIGIT(*s))
				return NULL;
			while (W2J_IS_DIGIT(*s))
				s++;
		}
		*type = JSON_TOKEN_NUMBER;
	}
	if (s >= end)
		return NULL;

	/* What ends the token: a structural character, or white space before one. */
	q = W2J_IS_SPACE(*s) ? fast_skip(s, end) : s;
	if (q == NULL || (*q != ',' && *q != '}' && *q != ']'))
		return NULL;
	*next = *q;
	*s = '\0';
	*pp = q + 1;
	return start;
}

/*
 * A scalar value at *pp (string or bare); *next is the structural
 * character after it, consumed.  NULL to give up.
 */
static char *
fast_scalar(char **pp, const char *end, JsonTokenType *type, char *next)
{
	char *tok;
	char *q;
	size_t len;

	if (**pp != '"')
		return fast_bare(pp, end, type, next);
	if ((tok = fast_string(pp, &len)) == NULL || (q = fast_skip(*pp, end)) == NULL)
		return NULL;
	*type = JSON_TOKEN_STRING;
	*next = *q;
	*pp = q + 1;
	return tok;
}

/*
 * A field name (its length in *lenp) and its colon at *pp; *pp moves to
 * the value.  NULL to give up.
 */
static char *
fast_field(char **pp, const char *end, size_t *lenp)
{
	char *p = fast_skip(*pp, end);
	char *name;

	if (p == NULL || *p != '"' || (name = fast_string(&p, lenp)) == NULL ||
		(p = fast_skip(p, end)) == NULL || *p != ':' || (p = fast_skip(p + 1, end)) == NULL)
		return NULL;
	*pp = p;
	return name;
}

/*
 * One of the arrays of column objects, its '[' at *pp; *next is the
 * structural character after it.  false to give up.
 */
static bool
fast_columns(W2jState *s, char **pp, const char *end, char *next)
{
	char *p = fast_skip(*pp + 1, end);
	char c;

	if (p == NULL)
		return false;
	if (*p == ']')
		c = ']';
	else
	{
		for (;;)
		{
			W2jColumn *col;

			if (*p != '{')
				return false;
			col = w2j_new_column(s);
			p = fast_skip(p + 1, end);
			if (p == NULL)
				return false;
			if (*p != '}')
			{
				do
				{
					size_t flen;
					char *field = fast_field(&p, end, &flen);
					char *tok;
					JsonTokenType type;

					if (field == NULL || (tok = fast_scalar(&p, end, &type, &c)) == NULL)
						return false;
					w2j_column_scalar(col, field, flen, tok, type);
				} while (c == ',');
				if (c != '}')
					return false;
			}
			else
				p++;
			/* After the object: another one, or the end of the array. */
			if ((p = fast_skip(p, end)) == NULL)
				return false;
			c = *p;
			if (c == ',')
			{
				if ((p = fast_skip(p + 1, end)) == NULL)
					return false;
				continue;
			}
			if (c != ']')
				return false;
			break;
		}
	}
	if ((p = fast_skip(p + 1, end)) == NULL || (*p != ',' && *p != '}'))
		return false;
	*next = *p;
	*pp = p + 1;
	return true;
}

/*
 * Read the message (len bytes, json[len] = '\0') with the fast reader;
 * false when it gives up (the message, partly decoded in place, must then
 * be read again from the original).
 */
static bool
w2j_parse_fast(char *json, int len, W2jState *s)
{
	const char *end = json + len;
	char *p = fast_skip(json, end);
	char c;

	if (p == NULL || *p != '{')
		return false;
	p = fast_skip(p + 1, end);
	if (p == NULL || *p == '}')
		return false;
	do
	{
		size_t flen;
		char *field = fast_field(&p, end, &flen);

		if (field == NULL)
			return false;
		if (*p == '[')
		{
			s->array = w2j_array_of(field, flen);
			if (s->array == W2J_NONE || !fast_columns(s, &p, end, &c))
				return false;
			s->array = W2J_NONE;
		}
		else
		{
			JsonTokenType type;
			char *tok = fast_scalar(&p, end, &type, &c);

			if (tok == NULL)
				return false;
			w2j_top_scalar(s->msg, field, flen, tok, type);
		}
	} while (c == ',');
	if (c != '}')
		return false;
	return fast_skip(p, end) == NULL;
}

/*
 * w2j_parse
 *		Parse one wal2json v2 message (len bytes, not NUL-terminated).  false
 *		with *err when the text is not JSON or not shaped as wal2json v2
 *		writes it.  The message's strings live in CurrentMemoryContext.
 */
bool
w2j_parse(const char *json, int len, W2jMessage *msg, char **err)
{
	char *copy = palloc(len + 1);
	W2jState state;
	int i;

	memcpy(copy, json, len);
	copy[len] = '\0';
	if (w2j_class[0] != W2J_CONTROL)
		w2j_init_classes();

	memset(msg, 0, sizeof(*msg));
	msg->xid = -1;
	memset(&state, 0, sizeof(state));
	state.msg = msg;
	if (!w2j_parse_fast(copy, len, &state))
	{
		/* The reference reader, from scratch, on an intact copy. */
		memcpy(copy, json, len);
		memset(msg, 0, sizeof(*msg));
		msg->xid = -1;
		memset(&state, 0, sizeof(state));
		state.msg = msg;
		if (!w2j_parse_reference(copy, len, &state, err))
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
