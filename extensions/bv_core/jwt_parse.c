/*-------------------------------------------------------------------------
 *
 * jwt_parse.c
 *	  Split, decode and structurally check a JWT before any cryptography.
 *
 * Everything an attacker sends reaches this file first, so it is written to
 * be small, strict and fuzzable:
 *
 *	- exactly three segments separated by '.', the token no longer than the
 *	  configured cap (checked before anything else is looked at);
 *	- each segment canonical base64url without padding (bv_encode.c);
 *	- header and payload strict RFC 8259 JSON objects: UTF-8 checked, no
 *	  control characters, no "\u0000", no lone surrogates, numbers of a
 *	  bounded length and exponent, nesting at most BV_JWT_JSON_DEPTH, at most
 *	  BV_JWT_MAX_MEMBERS members, and no duplicate member names at the top
 *	  level (two "exp" members would make the result depend on which one a
 *	  consumer reads).  What passes is also accepted by PostgreSQL's jsonb
 *	  input, so the backend never reports a parse error carrying token text;
 *	- the header's "alg" a string, "kid" (if any) a string of at most
 *	  BV_JWT_KID_MAX bytes; a "crit" member is refused, because this verifier
 *	  implements no header extension (RFC 7515 section 4.1.11).  "jku", "x5u",
 *	  "x5c" and "jwk" are ignored: keys come only from bv.jwt_keys.
 *
 * The payload is checked by the walker (bv_json_walk's), which can report
 * every token to callbacks: jwt.c builds the claims jsonb in the same pass
 * that checks them, so the payload, the bulk of a token, is read once.  The
 * header is checked by the validator (parse_top_object), which keeps the
 * top-level members for "alg", "kid" and "crit".  Both hold an object to
 * the same rules; the fuzzer cross-checks them.
 *
 * Plain C: no PostgreSQL, no OpenSSL, no allocation.  The caller passes a
 * work buffer (BV_JWT_WORK_LEN bytes) that receives the decoded segments and
 * the payload's unescaped strings; the libFuzzer harness
 * (tests/fuzz/jwt_fuzz.c) drives these functions directly.  No state is
 * kept between calls.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "bv_encode.h"
#include "jwt_parse.h"

/* Longest member name kept for duplicate detection, bytes. */
#define MEMBER_NAME_MAX 64

typedef struct JsonCursor
{
	const uint8_t *p;
	const uint8_t *end;
	int depth;
} JsonCursor;

/* A top-level member of an object: its unescaped name, its value's span. */
typedef struct JsonMember
{
	char name[MEMBER_NAME_MAX + 1];
	size_t name_len;
	const uint8_t *value;
	const uint8_t *value_end;
} JsonMember;

static bool parse_value(JsonCursor *c);

/*
 * Bytes that stand for themselves inside a JSON string: printable ASCII
 * other than '"' and '\\' (control characters are refused, bytes from 0x80
 * start a UTF-8 sequence that is checked on its own).
 */
#define PLAIN(b) ((b) >= 0x20 && (b) < 0x80 && (b) != '"' && (b) != '\\')
#define PLAIN_ROW(r)                                                          \
	PLAIN(r + 0), PLAIN(r + 1), PLAIN(r + 2), PLAIN(r + 3), PLAIN(r + 4),     \
		PLAIN(r + 5), PLAIN(r + 6), PLAIN(r + 7), PLAIN(r + 8), PLAIN(r + 9), \
		PLAIN(r + 10), PLAIN(r + 11), PLAIN(r + 12), PLAIN(r + 13),           \
		PLAIN(r + 14), PLAIN(r + 15)
static const bool json_plain[256] = {
	PLAIN_ROW(0x00), PLAIN_ROW(0x10), PLAIN_ROW(0x20), PLAIN_ROW(0x30),
	PLAIN_ROW(0x40), PLAIN_ROW(0x50), PLAIN_ROW(0x60), PLAIN_ROW(0x70),
	PLAIN_ROW(0x80), PLAIN_ROW(0x90), PLAIN_ROW(0xA0), PLAIN_ROW(0xB0),
	PLAIN_ROW(0xC0), PLAIN_ROW(0xD0), PLAIN_ROW(0xE0), PLAIN_ROW(0xF0)};

/* The end of the run of plain bytes (json_plain) from p, at most end. */
static inline const uint8_t *
plain_run_end(const uint8_t *p, const uint8_t *end)
{
	while (p < end && json_plain[*p])
		p++;
	return p;
}

static inline void
skip_ws(JsonCursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static inline int
hex4(const uint8_t *p)
{
	int v = 0;
	int i;

	for (i = 0; i < 4; i++)
	{
		uint8_t ch = p[i];

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			v |= ch - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* Append the UTF-8 form of code point cp to out, if it fits. */
static inline bool
put_utf8(uint32_t cp, char *out, size_t cap, size_t *len)
{
	uint8_t buf[4];
	size_t n;

	if (cp < 0x80)
	{
		buf[0] = (uint8_t) cp;
		n = 1;
	}
	else if (cp < 0x800)
	{
		buf[0] = (uint8_t) (0xC0 | (cp >> 6));
		buf[1] = (uint8_t) (0x80 | (cp & 0x3F));
		n = 2;
	}
	else if (cp < 0x10000)
	{
		buf[0] = (uint8_t) (0xE0 | (cp >> 12));
		buf[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
		buf[2] = (uint8_t) (0x80 | (cp & 0x3F));
		n = 3;
	}
	else
	{
		buf[0] = (uint8_t) (0xF0 | (cp >> 18));
		buf[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3F));
		buf[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
		buf[3] = (uint8_t) (0x80 | (cp & 0x3F));
		n = 4;
	}
	if (out == NULL)
		return true;
	if (*len + n > cap)
		return false;
	memcpy(out + *len, buf, n);
	*len += n;
	return true;
}

/*
 * Length of the valid UTF-8 sequence starting at p (a byte >= 0x80), or 0
 * if it is not valid: no overlong forms, no surrogates, nothing above
 * U+10FFFF.
 */
static inline size_t
utf8_sequence(const uint8_t *p, const uint8_t *end)
{
	uint8_t b0 = p[0];

	if (b0 >= 0xC2 && b0 <= 0xDF)
		return (end - p >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
	if (b0 >= 0xE0 && b0 <= 0xEF)
	{
		if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if (b0 == 0xE0 && p[1] < 0xA0)
			return 0; /* overlong */
		if (b0 == 0xED && p[1] >= 0xA0)
			return 0; /* surrogate */
		return 3;
	}
	if (b0 >= 0xF0 && b0 <= 0xF4)
	{
		if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
			(p[3] & 0xC0) != 0x80)
			return 0;
		if (b0 == 0xF0 && p[1] < 0x90)
			return 0; /* overlong */
		if (b0 == 0xF4 && p[1] >= 0x90)
			return 0; /* above U+10FFFF */
		return 4;
	}
	return 0;
}

/*
 * Parse a string at the cursor (which is on the opening quote).  If out is
 * not NULL, the unescaped text is written there (at most cap bytes, else
 * the string is refused); *out_len receives its length.
 */
static bool
parse_string(JsonCursor *c, char *out, size_t cap, size_t *out_len)
{
	size_t len = 0;

	c->p++; /* opening quote */
	while (c->p < c->end)
	{
		uint8_t ch = *c->p;

		if (ch == '"')
		{
			c->p++;
			if (out_len)
				*out_len = len;
			return true;
		}
		if (ch < 0x20)
			return false;
		if (ch == '\\')
		{
			uint8_t esc;
			uint32_t cp;

			if (c->end - c->p < 2)
				return false;
			esc = c->p[1];
			c->p += 2;
			switch (esc)
			{
				case '"':
				case '\\':
				case '/':
					cp = esc;
					break;
				case 'b':
					cp = '\b';
					break;
				case 'f':
					cp = '\f';
					break;
				case 'n':
					cp = '\n';
					break;
				case 'r':
					cp = '\r';
					break;
				case 't':
					cp = '\t';
					break;
				case 'u':
				{
					int v;

					if (c->end - c->p < 4 || (v = hex4(c->p)) < 0)
						return false;
					c->p += 4;
					if (v == 0)
						return false; /* jsonb refuses \u0000 */
					if (v >= 0xDC00 && v <= 0xDFFF)
						return false; /* lone low surrogate */
					if (v >= 0xD800 && v <= 0xDBFF)
					{
						int lo;

						if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' ||
							(lo = hex4(c->p + 2)) < 0 || lo < 0xDC00 || lo > 0xDFFF)
							return false;
						c->p += 6;
						cp = 0x10000 + (((uint32_t) v - 0xD800) << 10) + ((uint32_t) lo - 0xDC00);
					}
					else
						cp = (uint32_t) v;
					break;
				}
				default:
					return false;
			}
			if (!put_utf8(cp, out, cap, &len))
				return false;
			continue;
		}
		if (ch < 0x80)
		{
			/* a run of plain ASCII, the common case, copied at once */
			const uint8_t *run = c->p;
			size_t n;

			c->p = plain_run_end(c->p + 1, c->end);
			n = (size_t) (c->p - run);
			if (out)
			{
				if (len + n > cap)
					return false;
				memcpy(out + len, run, n);
			}
			len += n;
		}
		else
		{
			size_t n = utf8_sequence(c->p, c->end);

			if (n == 0)
				return false;
			if (out)
			{
				if (len + n > cap)
					return false;
				memcpy(out + len, c->p, n);
			}
			len += n;
			c->p += n;
		}
	}
	return false; /* unterminated */
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, bounded in length. */
static bool
parse_number(JsonCursor *c)
{
	const uint8_t *start = c->p;
	int exp_digits = 0;

	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p >= c->end)
		return false;
	if (*c->p == '0')
		c->p++;
	else if (*c->p >= '1' && *c->p <= '9')
		while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
			c->p++;
	else
		return false;
	if (c->p < c->end && *c->p == '.')
	{
		c->p++;
		if (c->p >= c->end || *c->p < '0' || *c->p > '9')
			return false;
		while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
			c->p++;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E'))
	{
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (c->p >= c->end || *c->p < '0' || *c->p > '9')
			return false;
		while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		{
			c->p++;
			exp_digits++;
		}
		/* numeric input overflows on huge exponents: keep them small */
		if (exp_digits > 3)
			return false;
	}
	return (size_t) (c->p - start) <= BV_JWT_NUMBER_MAX;
}

static bool
parse_literal(JsonCursor *c, const char *word, size_t len)
{
	if ((size_t) (c->end - c->p) < len || memcmp(c->p, word, len) != 0)
		return false;
	c->p += len;
	return true;
}

/*
 * Parse an object at the cursor.  When members is not NULL (the top level),
 * member names are unescaped, kept for the caller, and duplicates refused.
 */
static bool
parse_object(JsonCursor *c, JsonMember *members, size_t *nmembers)
{
	size_t n = 0;

	if (++c->depth > BV_JWT_JSON_DEPTH)
		return false;
	c->p++; /* { */
	skip_ws(c);
	if (c->p < c->end && *c->p == '}')
	{
		c->p++;
		c->depth--;
		if (nmembers)
			*nmembers = 0;
		return true;
	}
	for (;;)
	{
		JsonMember *m = NULL;

		if (n >= BV_JWT_MAX_MEMBERS)
			return false;
		skip_ws(c);
		if (c->p >= c->end || *c->p != '"')
			return false;
		if (members)
		{
			size_t i;

			m = &members[n];
			if (!parse_string(c, m->name, MEMBER_NAME_MAX, &m->name_len))
				return false;
			m->name[m->name_len] = '\0';
			for (i = 0; i < n; i++)
				if (members[i].name_len == m->name_len && members[i].name[0] == m->name[0] &&
					memcmp(members[i].name, m->name, m->name_len) == 0)
					return false; /* duplicate member */
		}
		else if (!parse_string(c, NULL, 0, NULL))
			return false;
		n++;
		skip_ws(c);
		if (c->p >= c->end || *c->p != ':')
			return false;
		c->p++;
		skip_ws(c);
		if (m)
			m->value = c->p;
		if (!parse_value(c))
			return false;
		if (m)
			m->value_end = c->p;
		skip_ws(c);
		if (c->p >= c->end)
			return false;
		if (*c->p == ',')
		{
			c->p++;
			continue;
		}
		if (*c->p == '}')
		{
			c->p++;
			break;
		}
		return false;
	}
	c->depth--;
	if (nmembers)
		*nmembers = n;
	return true;
}

static bool
parse_array(JsonCursor *c)
{
	size_t n = 0;

	if (++c->depth > BV_JWT_JSON_DEPTH)
		return false;
	c->p++; /* [ */
	skip_ws(c);
	if (c->p < c->end && *c->p == ']')
	{
		c->p++;
		c->depth--;
		return true;
	}
	for (;;)
	{
		if (++n > BV_JWT_MAX_MEMBERS)
			return false;
		skip_ws(c);
		if (!parse_value(c))
			return false;
		skip_ws(c);
		if (c->p >= c->end)
			return false;
		if (*c->p == ',')
		{
			c->p++;
			continue;
		}
		if (*c->p == ']')
		{
			c->p++;
			break;
		}
		return false;
	}
	c->depth--;
	return true;
}

static bool
parse_value(JsonCursor *c)
{
	if (c->p >= c->end)
		return false;
	switch (*c->p)
	{
		case '{':
			return parse_object(c, NULL, NULL);
		case '[':
			return parse_array(c);
		case '"':
			return parse_string(c, NULL, 0, NULL);
		case 't':
			return parse_literal(c, "true", 4);
		case 'f':
			return parse_literal(c, "false", 5);
		case 'n':
			return parse_literal(c, "null", 4);
		default:
			return parse_number(c);
	}
}

/*
 * Parse a whole segment: one object, surrounded by optional whitespace,
 * nothing else.  Fills members (BV_JWT_MAX_MEMBERS entries).
 */
static bool
parse_top_object(const uint8_t *json, size_t len, JsonMember *members,
				 size_t *nmembers)
{
	JsonCursor c = {json, json + len, 0};

	skip_ws(&c);
	if (c.p >= c.end || *c.p != '{')
		return false;
	if (!parse_object(&c, members, nmembers))
		return false;
	skip_ws(&c);
	return c.p == c.end;
}

/*
 * bv_json_object_is_strict
 *		True if json is one strict JSON object (the rules above).
 */
bool
bv_json_object_is_strict(const uint8_t *json, size_t len)
{
	JsonMember members[BV_JWT_MAX_MEMBERS];
	size_t n;

	return parse_top_object(json, len, members, &n);
}

/*
 * The walker: the same grammar, reporting each token to the handlers (if
 * any).  A top-level object is held to the rules of parse_top_object: its
 * member names at most MEMBER_NAME_MAX bytes and unique.  So for an object
 * the walker and bv_json_object_is_strict() accept the same texts, which
 * the fuzzer checks both ways (bv_jwt_parse() validates the payload with
 * the walker, and its result is checked with the validator).
 */
typedef struct JsonWalk
{
	JsonCursor c;
	char *scratch;
	size_t scratch_len;
	size_t scratch_used;
	const BvJsonHandlers *h; /* NULL: only check */
	void *ctx;
	/* the top-level object's member names so far (in scratch) */
	const char *names[BV_JWT_MAX_MEMBERS];
	size_t name_lens[BV_JWT_MAX_MEMBERS];
} JsonWalk;

static bool walk_value(JsonWalk *w);

/*
 * Each string is unescaped to the next free place of scratch and
 * NUL-terminated there.  It fits: a string's unescaped form plus its NUL is
 * never longer than its JSON form with quotes, and the strings of a
 * document do not overlap, so all of them together need at most the
 * document's length.
 */
static bool
walk_string(JsonWalk *w, bool is_key, const char **str, size_t *len)
{
	char *out = w->scratch + w->scratch_used;

	if (w->scratch_used >= w->scratch_len ||
		!parse_string(&w->c, out, w->scratch_len - w->scratch_used - 1, len))
		return false;
	out[*len] = '\0';
	w->scratch_used += *len + 1;
	*str = out;
	if (w->h == NULL)
		return true;
	if (is_key)
		w->h->key(w->ctx, out, *len);
	else
		w->h->string(w->ctx, out, *len);
	return true;
}

/* A top-level member name: short enough, and not seen before. */
static inline bool
top_name_ok(JsonWalk *w, size_t n, const char *name, size_t len)
{
	size_t i;

	if (len > MEMBER_NAME_MAX)
		return false;
	for (i = 0; i < n; i++)
		if (w->name_lens[i] == len && w->names[i][0] == name[0] &&
			memcmp(w->names[i], name, len) == 0)
			return false; /* duplicate member */
	w->names[n] = name;
	w->name_lens[n] = len;
	return true;
}

static bool
walk_container(JsonWalk *w, bool object)
{
	size_t n = 0;
	uint8_t close = object ? '}' : ']';
	bool top_object;

	if (++w->c.depth > BV_JWT_JSON_DEPTH)
		return false;
	top_object = object && w->c.depth == 1;
	w->c.p++;
	if (w->h)
	{
		if (object)
			w->h->object_start(w->ctx);
		else
			w->h->array_start(w->ctx);
	}
	skip_ws(&w->c);
	if (w->c.p < w->c.end && *w->c.p == close)
		w->c.p++;
	else
		for (;;)
		{
			if (++n > BV_JWT_MAX_MEMBERS)
				return false;
			skip_ws(&w->c);
			if (object)
			{
				const char *name;
				size_t name_len;

				if (w->c.p >= w->c.end || *w->c.p != '"' ||
					!walk_string(w, true, &name, &name_len))
					return false;
				if (top_object && !top_name_ok(w, n - 1, name, name_len))
					return false;
				skip_ws(&w->c);
				if (w->c.p >= w->c.end || *w->c.p != ':')
					return false;
				w->c.p++;
				skip_ws(&w->c);
			}
			if (!walk_value(w))
				return false;
			skip_ws(&w->c);
			if (w->c.p >= w->c.end)
				return false;
			if (*w->c.p == ',')
			{
				w->c.p++;
				continue;
			}
			if (*w->c.p != close)
				return false;
			w->c.p++;
			break;
		}
	w->c.depth--;
	if (w->h)
	{
		if (object)
			w->h->object_end(w->ctx);
		else
			w->h->array_end(w->ctx);
	}
	return true;
}

static bool
walk_value(JsonWalk *w)
{
	const uint8_t *start = w->c.p;
	const char *str;
	size_t len;
	int literal;

	if (w->c.p >= w->c.end)
		return false;
	switch (*w->c.p)
	{
		case '{':
			return walk_container(w, true);
		case '[':
			return walk_container(w, false);
		case '"':
			return walk_string(w, false, &str, &len);
		case 'n':
			if (!parse_literal(&w->c, "null", 4))
				return false;
			literal = 0;
			break;
		case 't':
			if (!parse_literal(&w->c, "true", 4))
				return false;
			literal = 1;
			break;
		case 'f':
			if (!parse_literal(&w->c, "false", 5))
				return false;
			literal = 2;
			break;
		default:
			if (!parse_number(&w->c))
				return false;
			if (w->h)
				w->h->number(w->ctx, (const char *) start, w->c.p - start);
			return true;
	}
	if (w->h)
		w->h->literal(w->ctx, literal);
	return true;
}

/* Walk one JSON value with surrounding whitespace; object: it must be one. */
static bool
walk_document(const uint8_t *json, size_t len, char *scratch, size_t scratch_len,
			  const BvJsonHandlers *h, void *ctx, bool object)
{
	JsonWalk w;

	w.c.p = json;
	w.c.end = json + len;
	w.c.depth = 0;
	w.scratch = scratch;
	w.scratch_len = scratch_len;
	w.scratch_used = 0;
	w.h = h;
	w.ctx = ctx;
	skip_ws(&w.c);
	if (object && (w.c.p >= w.c.end || *w.c.p != '{'))
		return false;
	if (!walk_value(&w))
		return false;
	skip_ws(&w.c);
	return w.c.p == w.c.end;
}

/*
 * bv_json_walk
 *		Report the tokens of one JSON value (with surrounding whitespace,
 *		nothing else) to the handlers.  scratch must hold len + 1 bytes; the
 *		strings passed to the handlers live there, each NUL-terminated at its
 *		own place, until the caller frees scratch.  Returns false, possibly
 *		after some callbacks, if json is not valid under the rules above
 *		(for an object, exactly those of bv_json_object_is_strict()).
 */
bool
bv_json_walk(const uint8_t *json, size_t len, char *scratch, size_t scratch_len,
			 const BvJsonHandlers *h, void *ctx)
{
	return walk_document(json, len, scratch, scratch_len, h, ctx, false);
}

/* Read a string member's value, unescaped, into out (cap bytes + NUL). */
static bool
member_string(const JsonMember *m, char *out, size_t cap)
{
	JsonCursor c = {m->value, m->value_end, 0};
	size_t len;

	if (c.p >= c.end || *c.p != '"')
		return false;
	if (!parse_string(&c, out, cap, &len) || c.p != c.end)
		return false;
	if (memchr(out, '\0', len) != NULL)
		return false;
	out[len] = '\0';
	return true;
}

/* Decode one base64url segment into *pos, advancing it. */
static bool
decode_segment(const char *s, size_t len, uint8_t **pos, const uint8_t *limit,
			   const uint8_t **out, size_t *out_len)
{
	if ((size_t) (limit - *pos) < BV_B64URL_DEC_LEN(len))
		return false;
	if (!bv_b64url_decode(s, len, *pos, out_len))
		return false;
	*out = *pos;
	*pos += *out_len;
	return true;
}

/*
 * bv_jwt_parse_walk
 *		Parse token (len bytes, not necessarily NUL-terminated) into parts,
 *		reporting the payload's tokens to h (if not NULL) as it is checked,
 *		so that a caller can build the claims in the same pass.  The strings
 *		passed to h live in work.  work must hold BV_JWT_WORK_LEN(len)
 *		bytes.  Nothing is verified cryptographically here.  On failure, h
 *		may have seen part of the payload.
 */
BvJwtParseResult
bv_jwt_parse_walk(const char *token, size_t len, size_t max_len, uint8_t *work,
				  size_t work_len, const BvJsonHandlers *h, void *ctx,
				  BvJwtParts *parts)
{
	const char *dot1;
	const char *dot2;
	const char *end = token + len;
	uint8_t *pos = work;
	const uint8_t *limit = work + work_len;
	JsonMember members[BV_JWT_MAX_MEMBERS];
	size_t nmembers;
	size_t i;
	bool has_alg = false;

	memset(parts, 0, sizeof(*parts));
	if (len > max_len)
		return BV_JWT_PARSE_TOO_LARGE;
	if (work_len < BV_JWT_WORK_LEN(len))
		return BV_JWT_PARSE_TOO_LARGE;

	dot1 = memchr(token, '.', len);
	if (dot1 == NULL)
		return BV_JWT_PARSE_SEGMENTS;
	dot2 = memchr(dot1 + 1, '.', end - (dot1 + 1));
	if (dot2 == NULL || memchr(dot2 + 1, '.', end - (dot2 + 1)) != NULL)
		return BV_JWT_PARSE_SEGMENTS;
	/* header and payload must be non-empty; an empty signature is "none" */
	if (dot1 == token || dot2 == dot1 + 1 || dot2 + 1 == end)
		return BV_JWT_PARSE_SEGMENTS;

	if (!decode_segment(token, dot1 - token, &pos, limit, &parts->header, &parts->header_len) ||
		!decode_segment(dot1 + 1, dot2 - (dot1 + 1), &pos, limit, &parts->payload, &parts->payload_len) ||
		!decode_segment(dot2 + 1, end - (dot2 + 1), &pos, limit, &parts->signature, &parts->signature_len))
		return BV_JWT_PARSE_BASE64;
	parts->signing_input = token;
	parts->signing_input_len = dot2 - token;

	/* the rest of work is the walker's scratch: payload_len + 1 bytes fit */
	if (!walk_document(parts->payload, parts->payload_len, (char *) pos, limit - pos, h, ctx, true))
		return BV_JWT_PARSE_JSON;
	if (!parse_top_object(parts->header, parts->header_len, members, &nmembers))
		return BV_JWT_PARSE_JSON;

	for (i = 0; i < nmembers; i++)
	{
		const JsonMember *m = &members[i];

		if (m->name_len == 3 && memcmp(m->name, "alg", 3) == 0)
		{
			if (!member_string(m, parts->alg, BV_JWT_ALG_MAX))
				return BV_JWT_PARSE_HEADER;
			has_alg = true;
		}
		else if (m->name_len == 3 && memcmp(m->name, "kid", 3) == 0)
		{
			if (!member_string(m, parts->kid, BV_JWT_KID_MAX) || parts->kid[0] == '\0')
				return BV_JWT_PARSE_HEADER;
			parts->has_kid = true;
		}
		else if (m->name_len == 4 && memcmp(m->name, "crit", 4) == 0)
			return BV_JWT_PARSE_CRIT;
	}
	if (!has_alg || parts->alg[0] == '\0')
		return BV_JWT_PARSE_HEADER;
	return BV_JWT_PARSE_OK;
}

/*
 * bv_jwt_parse
 *		bv_jwt_parse_walk() without handlers: split, decode and check.
 */
BvJwtParseResult
bv_jwt_parse(const char *token, size_t len, size_t max_len, uint8_t *work,
			 size_t work_len, BvJwtParts *parts)
{
	return bv_jwt_parse_walk(token, len, max_len, work, work_len, NULL, NULL, parts);
}
