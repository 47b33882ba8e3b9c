/*-------------------------------------------------------------------------
 *
 * gql_parse.h
 *	  The GraphQL lexer and parser (October 2021 specification, executable
 *	  documents): plain C, no backend.
 *
 * Kept free of PostgreSQL headers so that the libFuzzer harness in
 * tests/fuzz/graphql_fuzz.c compiles exactly this code outside the server.
 * Memory comes from a caller-supplied allocator (palloc in the server,
 * malloc with a free list in the fuzzer); nothing is freed piecemeal.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_GQL_PARSE_H
#define BV_GQL_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define GQL_ERRMSG_MAX 256

typedef struct GqlLoc
{
	int line;   /* 1-based */
	int column; /* 1-based, in code points */
} GqlLoc;

typedef enum GqlValueKind
{
	GQL_V_VARIABLE,
	GQL_V_INT,
	GQL_V_FLOAT,
	GQL_V_STRING,
	GQL_V_BOOLEAN,
	GQL_V_NULL,
	GQL_V_ENUM,
	GQL_V_LIST,
	GQL_V_OBJECT
} GqlValueKind;

typedef struct GqlValue
{
	GqlValueKind kind;
	GqlLoc loc;
	const char *str;         /* number text, string (unescaped), enum, variable name */
	bool boolean;            /* GQL_V_BOOLEAN */
	int n;                   /* items of a list or fields of an object */
	struct GqlValue **items; /* list items / object field values */
	const char **names;      /* object field names */
	GqlLoc *name_locs;       /* object field name locations */
	bool from_json;          /* built from a JSON variable value, not parsed */
} GqlValue;

typedef struct GqlArgument
{
	const char *name;
	GqlLoc loc;
	GqlValue *value;
} GqlArgument;

typedef struct GqlDirective
{
	const char *name;
	GqlLoc loc;
	int nargs;
	GqlArgument *args;
} GqlDirective;

typedef enum GqlSelectionKind
{
	GQL_SEL_FIELD,
	GQL_SEL_SPREAD,
	GQL_SEL_INLINE
} GqlSelectionKind;

struct GqlSelectionSet;

typedef struct GqlSelection
{
	GqlSelectionKind kind;
	GqlLoc loc;
	const char *alias;     /* field: NULL when none */
	const char *name;      /* field name, or fragment name of a spread */
	const char *type_cond; /* inline fragment: NULL when none */
	int nargs;             /* field arguments */
	GqlArgument *args;
	int ndirs;
	GqlDirective *dirs;
	struct GqlSelectionSet *sel; /* NULL for a leaf field and a spread */
} GqlSelection;

typedef struct GqlSelectionSet
{
	GqlLoc loc;
	int n;
	GqlSelection **items;
} GqlSelectionSet;

typedef enum GqlTypeRefKind
{
	GQL_T_NAMED,
	GQL_T_LIST,
	GQL_T_NON_NULL
} GqlTypeRefKind;

typedef struct GqlTypeRef
{
	GqlTypeRefKind kind;
	GqlLoc loc;
	const char *name; /* GQL_T_NAMED */
	struct GqlTypeRef *of;
} GqlTypeRef;

typedef struct GqlVarDef
{
	const char *name;
	GqlLoc loc;
	GqlTypeRef *type;
	GqlValue *def; /* default value, NULL when none */
	int ndirs;
	GqlDirective *dirs;
} GqlVarDef;

typedef enum GqlOpKind
{
	GQL_OP_QUERY,
	GQL_OP_MUTATION,
	GQL_OP_SUBSCRIPTION
} GqlOpKind;

typedef struct GqlDefinition
{
	bool is_fragment;
	GqlOpKind op;     /* operations */
	const char *name; /* NULL for an anonymous operation */
	GqlLoc loc;
	const char *type_cond; /* fragments */
	int nvars;
	GqlVarDef *vars;
	int ndirs;
	GqlDirective *dirs;
	GqlSelectionSet *sel;
} GqlDefinition;

typedef struct GqlDocument
{
	int n;
	GqlDefinition **defs;
} GqlDocument;

/* Limits applied while parsing; 0 means "no limit". */
typedef struct GqlLimits
{
	int max_tokens;  /* lexical tokens in the document */
	int max_depth;   /* nesting of selection sets, values and types */
	int max_aliases; /* fields with an alias */
} GqlLimits;

typedef void *(*GqlAllocFn)(void *ctx, size_t size);

typedef struct GqlParseError
{
	char message[GQL_ERRMSG_MAX];
	GqlLoc loc;
	bool limit; /* a limit was exceeded (not a syntax error) */
} GqlParseError;

/*
 * Parse len bytes of src into a document.  Returns NULL and fills *err on
 * the first syntax error or exceeded limit.  Allocates only through alloc,
 * which must return zeroed memory or NULL (then "out of memory" is
 * reported).
 */
extern GqlDocument *gql_parse(const char *src, size_t len, const GqlLimits *limits,
							  GqlAllocFn alloc, void *alloc_ctx, GqlParseError *err);

/* Is s a GraphQL Name (/[_A-Za-z][_0-9A-Za-z]*\/)? */
extern bool gql_is_name(const char *s);

#endif /* BV_GQL_PARSE_H */
