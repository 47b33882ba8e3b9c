/*-------------------------------------------------------------------------
 *
 * gql_lex.h
 *	  The GraphQL lexer's state, shared by gql_lex.c and gql_parse.c only.
 *
 * Plain C like gql_parse.h.  Errors leave through longjmp to the setjmp in
 * gql_parse(): the lexer and parser allocate only from the caller's arena,
 * so nothing needs unwinding.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_GQL_LEX_H
#define BV_GQL_LEX_H

#include <setjmp.h>

#include "gql_parse.h"

typedef enum GqlTokKind
{
	TK_EOF,
	TK_PUNCT, /* punct holds the character; "..." is '.' */
	TK_NAME,
	TK_INT,
	TK_FLOAT,
	TK_STRING,
	TK_BLOCK_STRING
} GqlTokKind;

typedef struct GqlToken
{
	GqlTokKind kind;
	char punct;
	GqlLoc loc;
	const char *value; /* names, numbers and strings: NUL-terminated copy */
} GqlToken;

typedef struct GqlLexer
{
	const unsigned char *p;
	const unsigned char *end;
	int line;
	int column;
	int ntokens;
	const GqlLimits *limits;
	GqlAllocFn alloc;
	void *alloc_ctx;
	GqlParseError *err;
	jmp_buf fail;
	GqlToken tok; /* the current (lookahead) token */
} GqlLexer;

/* Fill lx->tok with the next token; longjmps on a lexical error. */
extern void gql_lex_next(GqlLexer *lx);

/* Zeroed memory from the caller's allocator; longjmps when it fails. */
extern void *gql_alloc(GqlLexer *lx, size_t size);

/* Report an error at loc (printf-style) and longjmp out of gql_parse(). */
extern void gql_fail(GqlLexer *lx, GqlLoc loc, bool limit, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), noreturn));

/* "Name \"x\"", "\"{\"", "<EOF>"...: how a token is named in messages. */
extern void gql_describe_token(const GqlToken *t, char *buf, size_t size);

#endif /* BV_GQL_LEX_H */
