/*-------------------------------------------------------------------------
 *
 * gql_lex.c
 *	  The GraphQL lexer (October 2021 specification, section 2.1).
 *
 * Turns the source text into tokens one at a time for gql_parse.c:
 * punctuators, names, int and float values (with the spec's rule that a
 * number may not be followed by a name start, a digit or a dot), strings
 * with \uXXXX escapes (surrogate pairs combined, lone surrogates and
 * \u0000 refused: the values end up in PostgreSQL text) and block strings
 * with the spec's indentation removal.  Ignored tokens: the byte order mark,
 * white space, line terminators, comments and commas.
 *
 * Locations are 1-based lines and columns; a column counts code points (a
 * UTF-8 continuation byte does not advance it), "\r\n" is one line end.
 * Every token counts against limits->max_tokens, so that a client cannot
 * make the server lex megabytes of commas into a huge tree.
 *
 * Plain C (see gql_parse.h); errors longjmp to gql_parse().
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gql_lex.h"

void *
gql_alloc(GqlLexer *lx, size_t size)
{
	void *m = lx->alloc(lx->alloc_ctx, size ? size : 1);

	if (m == NULL)
	{
		GqlLoc loc = {lx->line, lx->column};

		gql_fail(lx, loc, true, "out of memory while parsing the document");
	}
	return m;
}

void
gql_fail(GqlLexer *lx, GqlLoc loc, bool limit, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(lx->err->message, sizeof(lx->err->message), fmt, ap);
	va_end(ap);
	lx->err->loc = loc;
	lx->err->limit = limit;
	longjmp(lx->fail, 1);
}

void
gql_describe_token(const GqlToken *t, char *buf, size_t size)
{
	switch (t->kind)
	{
		case TK_EOF:
			snprintf(buf, size, "<EOF>");
			break;
		case TK_PUNCT:
			snprintf(buf, size, "\"%s\"", t->punct == '.' ? "..." : (char[]){t->punct, 0});
			break;
		case TK_NAME:
			snprintf(buf, size, "Name \"%.40s\"", t->value);
			break;
		case TK_INT:
			snprintf(buf, size, "Int \"%.40s\"", t->value);
			break;
		case TK_FLOAT:
			snprintf(buf, size, "Float \"%.40s\"", t->value);
			break;
		case TK_STRING:
			snprintf(buf, size, "String");
			break;
		case TK_BLOCK_STRING:
			snprintf(buf, size, "BlockString");
			break;
	}
}

/* Consume one byte, keeping line and column. */
static inline void
adv(GqlLexer *lx)
{
	unsigned char b = *lx->p++;

	if (b == '\n')
	{
		lx->line++;
		lx->column = 1;
	}
	else if (b == '\r')
	{
		if (lx->p < lx->end && *lx->p == '\n')
			lx->p++;
		lx->line++;
		lx->column = 1;
	}
	else if ((b & 0xC0) != 0x80)
		lx->column++;
}

static inline GqlLoc
here(const GqlLexer *lx)
{
	GqlLoc loc = {lx->line, lx->column};

	return loc;
}

static inline bool
name_start(unsigned char c)
{
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline bool
name_continue(unsigned char c)
{
	return name_start(c) || (c >= '0' && c <= '9');
}

bool
gql_is_name(const char *s)
{
	if (s == NULL || !name_start((unsigned char) *s))
		return false;
	for (s++; *s; s++)
		if (!name_continue((unsigned char) *s))
			return false;
	return true;
}

static char *
copy_span(GqlLexer *lx, const unsigned char *from, size_t len)
{
	char *s = gql_alloc(lx, len + 1);

	memcpy(s, from, len);
	s[len] = '\0';
	return s;
}

static void
skip_ignored(GqlLexer *lx)
{
	while (lx->p < lx->end)
	{
		unsigned char c = *lx->p;

		if (c == ' ' || c == '\t' || c == ',' || c == '\n' || c == '\r')
			adv(lx);
		else if (c == 0xEF && lx->end - lx->p >= 3 && lx->p[1] == 0xBB && lx->p[2] == 0xBF)
			lx->p += 3, lx->column++;
		else if (c == '#')
		{
			while (lx->p < lx->end && *lx->p != '\n' && *lx->p != '\r')
				adv(lx);
		}
		else
			break;
	}
}

static void
unexpected_char(GqlLexer *lx)
{
	unsigned char c = *lx->p;

	if (c >= 0x20 && c < 0x7F)
		gql_fail(lx, here(lx), false, "Syntax Error: Unexpected character: \"%c\".", c);
	gql_fail(lx, here(lx), false, "Syntax Error: Unexpected character: byte 0x%02X.", c);
}

static void
lex_number(GqlLexer *lx)
{
	const unsigned char *start = lx->p;
	bool is_float = false;

	if (*lx->p == '-')
		adv(lx);
	if (lx->p < lx->end && *lx->p == '0')
	{
		adv(lx);
		if (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9')
			gql_fail(lx, here(lx), false, "Syntax Error: Invalid number, unexpected digit after 0: \"%c\".", *lx->p);
	}
	else if (lx->p < lx->end && *lx->p >= '1' && *lx->p <= '9')
	{
		while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9')
			adv(lx);
	}
	else
		gql_fail(lx, here(lx), false, "Syntax Error: Invalid number, expected digit.");
	if (lx->p < lx->end && *lx->p == '.')
	{
		is_float = true;
		adv(lx);
		if (lx->p >= lx->end || *lx->p < '0' || *lx->p > '9')
			gql_fail(lx, here(lx), false, "Syntax Error: Invalid number, expected digit.");
		while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9')
			adv(lx);
	}
	if (lx->p < lx->end && (*lx->p == 'e' || *lx->p == 'E'))
	{
		is_float = true;
		adv(lx);
		if (lx->p < lx->end && (*lx->p == '+' || *lx->p == '-'))
			adv(lx);
		if (lx->p >= lx->end || *lx->p < '0' || *lx->p > '9')
			gql_fail(lx, here(lx), false, "Syntax Error: Invalid number, expected digit.");
		while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9')
			adv(lx);
	}
	if (lx->p < lx->end && (*lx->p == '.' || name_start(*lx->p)))
		gql_fail(lx, here(lx), false, "Syntax Error: Invalid number, unexpected \"%c\" after it.", *lx->p);
	lx->tok.kind = is_float ? TK_FLOAT : TK_INT;
	lx->tok.value = copy_span(lx, start, lx->p - start);
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Four hex digits after "\u" at lx->p; -1 when they are not. */
static long
read_hex4(GqlLexer *lx)
{
	long v = 0;

	if (lx->end - lx->p < 4)
		return -1;
	for (int i = 0; i < 4; i++)
	{
		int h = hexval(lx->p[i]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static size_t
put_utf8(char *out, unsigned long cp)
{
	if (cp < 0x80)
	{
		out[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		out[0] = (char) (0xC0 | (cp >> 6));
		out[1] = (char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		out[0] = (char) (0xE0 | (cp >> 12));
		out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char) (0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char) (0xF0 | (cp >> 18));
	out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char) (0x80 | (cp & 0x3F));
	return 4;
}

static void
lex_string(GqlLexer *lx)
{
	const unsigned char *start;
	char *out;
	size_t n = 0;

	adv(lx); /* the quote */
	start = lx->p;
	/* the unescaped value is never longer than the escaped text */
	out = gql_alloc(lx, (size_t) (lx->end - start) + 1);
	for (;;)
	{
		unsigned char c;

		if (lx->p >= lx->end || *lx->p == '\n' || *lx->p == '\r')
			gql_fail(lx, here(lx), false, "Syntax Error: Unterminated string.");
		c = *lx->p;
		if (c == '"')
		{
			adv(lx);
			break;
		}
		if (c < 0x20 && c != '\t')
			gql_fail(lx, here(lx), false, "Syntax Error: Invalid character within String: byte 0x%02X.", c);
		if (c != '\\')
		{
			out[n++] = (char) c;
			adv(lx);
			continue;
		}
		{
			GqlLoc at = here(lx);
			unsigned char e;

			adv(lx);
			if (lx->p >= lx->end)
				gql_fail(lx, at, false, "Syntax Error: Unterminated string.");
			e = *lx->p;
			adv(lx);
			switch (e)
			{
				case '"':
				case '\\':
				case '/':
					out[n++] = (char) e;
					break;
				case 'b':
					out[n++] = '\b';
					break;
				case 'f':
					out[n++] = '\f';
					break;
				case 'n':
					out[n++] = '\n';
					break;
				case 'r':
					out[n++] = '\r';
					break;
				case 't':
					out[n++] = '\t';
					break;
				case 'u':
				{
					long cp = read_hex4(lx);

					if (cp < 0)
						gql_fail(lx, at, false, "Syntax Error: Invalid Unicode escape sequence.");
					for (int i = 0; i < 4; i++)
						adv(lx);
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						long lo = -1;

						if (lx->end - lx->p >= 6 && lx->p[0] == '\\' && lx->p[1] == 'u')
						{
							lx->p += 2;
							lo = read_hex4(lx);
							lx->p -= 2;
						}
						if (lo < 0xDC00 || lo > 0xDFFF)
							gql_fail(lx, at, false, "Syntax Error: Invalid Unicode escape sequence: lone surrogate.");
						for (int i = 0; i < 6; i++)
							adv(lx);
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
						gql_fail(lx, at, false, "Syntax Error: Invalid Unicode escape sequence: lone surrogate.");
					else if (cp == 0)
						gql_fail(lx, at, false, "Syntax Error: \"\\u0000\" is not supported in strings.");
					n += put_utf8(out + n, (unsigned long) cp);
					break;
				}
				default:
					gql_fail(lx, at, false, "Syntax Error: Invalid character escape sequence.");
			}
		}
	}
	out[n] = '\0';
	lx->tok.kind = TK_STRING;
	lx->tok.value = out;
}

static bool
blank_line(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

static size_t
leading_ws(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i;
}

/*
 * The spec's BlockStringValue(): remove the common indentation of all lines
 * but the first, then leading and trailing blank lines; lines joined by \n.
 */
static char *
block_string_value(GqlLexer *lx, const char *raw, size_t len)
{
	size_t nlines = 1;
	size_t *starts, *lens;
	size_t common = (size_t) -1;
	size_t first = 0, last, k = 0;
	char *out;
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		if (raw[i] == '\n' || (raw[i] == '\r' && !(i + 1 < len && raw[i + 1] == '\n')))
			nlines++;
	starts = gql_alloc(lx, nlines * sizeof(size_t));
	lens = gql_alloc(lx, nlines * sizeof(size_t));
	starts[0] = 0;
	for (size_t i = 0; i < len; i++)
	{
		if (raw[i] == '\r' || raw[i] == '\n')
		{
			lens[k] = i - starts[k];
			if (raw[i] == '\r' && i + 1 < len && raw[i + 1] == '\n')
				i++;
			starts[++k] = i + 1;
		}
	}
	lens[k] = len - starts[k];
	for (size_t i = 1; i < nlines; i++)
	{
		size_t ws = leading_ws(raw + starts[i], lens[i]);

		if (ws < lens[i] && ws < common)
			common = ws;
	}
	if (common != (size_t) -1)
		for (size_t i = 1; i < nlines; i++)
		{
			size_t cut = common < lens[i] ? common : lens[i];

			starts[i] += cut;
			lens[i] -= cut;
		}
	while (first < nlines && blank_line(raw + starts[first], lens[first]))
		first++;
	last = nlines;
	while (last > first && blank_line(raw + starts[last - 1], lens[last - 1]))
		last--;
	out = gql_alloc(lx, len + 1);
	for (size_t i = first; i < last; i++)
	{
		if (i > first)
			out[n++] = '\n';
		memcpy(out + n, raw + starts[i], lens[i]);
		n += lens[i];
	}
	out[n] = '\0';
	return out;
}

static void
lex_block_string(GqlLexer *lx)
{
	GqlLoc at = here(lx);
	char *raw;
	size_t n = 0;

	for (int i = 0; i < 3; i++)
		adv(lx);
	raw = gql_alloc(lx, (size_t) (lx->end - lx->p) + 1);
	for (;;)
	{
		unsigned char c;

		if (lx->p >= lx->end)
			gql_fail(lx, at, false, "Syntax Error: Unterminated string.");
		c = *lx->p;
		if (c == '"' && lx->end - lx->p >= 3 && lx->p[1] == '"' && lx->p[2] == '"')
		{
			for (int i = 0; i < 3; i++)
				adv(lx);
			break;
		}
		if (c == '\\' && lx->end - lx->p >= 4 && lx->p[1] == '"' && lx->p[2] == '"' && lx->p[3] == '"')
		{
			memcpy(raw + n, "\"\"\"", 3);
			n += 3;
			for (int i = 0; i < 4; i++)
				adv(lx);
			continue;
		}
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
			gql_fail(lx, here(lx), false, "Syntax Error: Invalid character within String: byte 0x%02X.", c);
		if (c == '\r')
		{
			/* keep line ends as written; adv() would fold "\r\n" */
			raw[n++] = '\r';
			lx->p++;
			if (lx->p < lx->end && *lx->p == '\n')
			{
				raw[n++] = '\n';
				lx->p++;
			}
			lx->line++;
			lx->column = 1;
			continue;
		}
		raw[n++] = (char) c;
		adv(lx);
	}
	lx->tok.kind = TK_BLOCK_STRING;
	lx->tok.value = block_string_value(lx, raw, n);
}

void
gql_lex_next(GqlLexer *lx)
{
	unsigned char c;

	skip_ignored(lx);
	lx->tok.loc = here(lx);
	lx->tok.value = NULL;
	lx->tok.punct = 0;
	if (lx->p >= lx->end)
	{
		lx->tok.kind = TK_EOF;
		return;
	}
	if (lx->limits->max_tokens > 0 && ++lx->ntokens > lx->limits->max_tokens)
		gql_fail(lx, lx->tok.loc, true, "the document has more than %d tokens", lx->limits->max_tokens);
	c = *lx->p;
	switch (c)
	{
		case '!':
		case '$':
		case '&':
		case '(':
		case ')':
		case ':':
		case '=':
		case '@':
		case '[':
		case ']':
		case '{':
		case '|':
		case '}':
			lx->tok.kind = TK_PUNCT;
			lx->tok.punct = (char) c;
			adv(lx);
			return;
		case '.':
			if (lx->end - lx->p >= 3 && lx->p[1] == '.' && lx->p[2] == '.')
			{
				lx->tok.kind = TK_PUNCT;
				lx->tok.punct = '.';
				for (int i = 0; i < 3; i++)
					adv(lx);
				return;
			}
			unexpected_char(lx);
			break;
		case '"':
			if (lx->end - lx->p >= 3 && lx->p[1] == '"' && lx->p[2] == '"')
				lex_block_string(lx);
			else
				lex_string(lx);
			return;
		default:
			break;
	}
	if (c == '-' || (c >= '0' && c <= '9'))
	{
		lex_number(lx);
		return;
	}
	if (name_start(c))
	{
		const unsigned char *start = lx->p;

		while (lx->p < lx->end && name_continue(*lx->p))
			adv(lx);
		lx->tok.kind = TK_NAME;
		lx->tok.value = copy_span(lx, start, lx->p - start);
		return;
	}
	unexpected_char(lx);
}
