/*-------------------------------------------------------------------------
 *
 * gql_parse.c
 *	  The GraphQL parser: executable documents of the October 2021
 *	  specification (section 2) into the tree of gql_parse.h.
 *
 * Recursive descent over the tokens of gql_lex.c with one token of
 * lookahead: operations (query, mutation, subscription, and the query
 * shorthand), variable definitions with defaults and directives, fragments
 * and inline fragments, fields with aliases, arguments and directives, and
 * every value form (variables, int, float, string, block string, boolean,
 * null, enum, list, input object).  Type system definitions (SDL) are
 * refused: they are not executable.
 *
 * Recursion is bounded by limits->max_depth, counted over selection sets,
 * list and object values and list types together, so no document can
 * exhaust the C stack; limits->max_aliases caps fields with an alias (the
 * "alias overloading" attack), and the lexer caps the token count.  The
 * first error stops the parse (as graphql-js does) and is reported with
 * its location.
 *
 * Plain C (see gql_parse.h): memory comes from the caller's allocator,
 * errors longjmp back to gql_parse(), which returns NULL.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "gql_lex.h"

typedef struct Parser
{
	GqlLexer lx;
	int depth;
	int aliases;
} Parser;

/* A growable array in the arena (old blocks are left to the arena). */
typedef struct Vec
{
	void *items;
	int n;
	int cap;
	size_t elsize;
} Vec;

static void
vec_push(Parser *P, Vec *v, const void *elem)
{
	if (v->n == v->cap)
	{
		int cap = v->cap ? v->cap * 2 : 4;
		void *items = gql_alloc(&P->lx, (size_t) cap * v->elsize);

		if (v->n)
			memcpy(items, v->items, (size_t) v->n * v->elsize);
		v->items = items;
		v->cap = cap;
	}
	memcpy((char *) v->items + (size_t) v->n * v->elsize, elem, v->elsize);
	v->n++;
}

static GqlSelectionSet *parse_selection_set(Parser *P);
static GqlValue *parse_value(Parser *P, bool is_const);
static GqlTypeRef *parse_type(Parser *P);

static inline GqlToken *
tok(Parser *P)
{
	return &P->lx.tok;
}

static inline void
next(Parser *P)
{
	gql_lex_next(&P->lx);
}

static inline bool
peek_punct(Parser *P, char c)
{
	return tok(P)->kind == TK_PUNCT && tok(P)->punct == c;
}

static inline bool
peek_keyword(Parser *P, const char *kw)
{
	return tok(P)->kind == TK_NAME && strcmp(tok(P)->value, kw) == 0;
}

static void
unexpected(Parser *P, const char *expected)
{
	char found[80];

	gql_describe_token(tok(P), found, sizeof(found));
	if (expected)
		gql_fail(&P->lx, tok(P)->loc, false, "Syntax Error: Expected %s, found %s.", expected, found);
	gql_fail(&P->lx, tok(P)->loc, false, "Syntax Error: Unexpected %s.", found);
}

static void
expect_punct(Parser *P, char c)
{
	if (!peek_punct(P, c))
	{
		char what[8] = {'"', c, '"', 0};

		if (c == '.')
			strcpy(what, "\"...\"");
		unexpected(P, what);
	}
	next(P);
}

static const char *
expect_name(Parser *P)
{
	const char *name;

	if (tok(P)->kind != TK_NAME)
		unexpected(P, "Name");
	name = tok(P)->value;
	next(P);
	return name;
}

static void
enter(Parser *P, GqlLoc loc)
{
	if (P->lx.limits->max_depth > 0 && ++P->depth > P->lx.limits->max_depth)
		gql_fail(&P->lx, loc, true, "the document nests deeper than %d levels", P->lx.limits->max_depth);
}

static inline void
leave(Parser *P)
{
	P->depth--;
}

static GqlValue *
new_value(Parser *P, GqlValueKind kind, GqlLoc loc)
{
	GqlValue *v = gql_alloc(&P->lx, sizeof(GqlValue));

	v->kind = kind;
	v->loc = loc;
	return v;
}

static GqlValue *
parse_list_value(Parser *P, bool is_const)
{
	GqlValue *v = new_value(P, GQL_V_LIST, tok(P)->loc);
	Vec items = {NULL, 0, 0, sizeof(GqlValue *)};

	enter(P, v->loc);
	next(P);
	while (!peek_punct(P, ']'))
	{
		GqlValue *item;

		if (tok(P)->kind == TK_EOF)
			unexpected(P, NULL);
		item = parse_value(P, is_const);
		vec_push(P, &items, &item);
	}
	next(P);
	leave(P);
	v->n = items.n;
	v->items = items.items;
	return v;
}

static GqlValue *
parse_object_value(Parser *P, bool is_const)
{
	GqlValue *v = new_value(P, GQL_V_OBJECT, tok(P)->loc);
	Vec names = {NULL, 0, 0, sizeof(const char *)};
	Vec locs = {NULL, 0, 0, sizeof(GqlLoc)};
	Vec items = {NULL, 0, 0, sizeof(GqlValue *)};

	enter(P, v->loc);
	next(P);
	while (!peek_punct(P, '}'))
	{
		GqlLoc loc = tok(P)->loc;
		const char *name = expect_name(P);
		GqlValue *item;

		expect_punct(P, ':');
		item = parse_value(P, is_const);
		vec_push(P, &names, &name);
		vec_push(P, &locs, &loc);
		vec_push(P, &items, &item);
	}
	next(P);
	leave(P);
	v->n = items.n;
	v->names = names.items;
	v->name_locs = locs.items;
	v->items = items.items;
	return v;
}

static GqlValue *
parse_value(Parser *P, bool is_const)
{
	GqlToken *t = tok(P);
	GqlValue *v;

	switch (t->kind)
	{
		case TK_PUNCT:
			if (t->punct == '[')
				return parse_list_value(P, is_const);
			if (t->punct == '{')
				return parse_object_value(P, is_const);
			if (t->punct == '$' && !is_const)
			{
				v = new_value(P, GQL_V_VARIABLE, t->loc);
				next(P);
				v->str = expect_name(P);
				return v;
			}
			break;
		case TK_INT:
		case TK_FLOAT:
		case TK_STRING:
		case TK_BLOCK_STRING:
			v = new_value(P, t->kind == TK_INT ? GQL_V_INT : t->kind == TK_FLOAT ? GQL_V_FLOAT
																				 : GQL_V_STRING,
						  t->loc);
			v->str = t->value;
			next(P);
			return v;
		case TK_NAME:
			if (strcmp(t->value, "true") == 0 || strcmp(t->value, "false") == 0)
			{
				v = new_value(P, GQL_V_BOOLEAN, t->loc);
				v->boolean = t->value[0] == 't';
			}
			else if (strcmp(t->value, "null") == 0)
				v = new_value(P, GQL_V_NULL, t->loc);
			else
			{
				v = new_value(P, GQL_V_ENUM, t->loc);
				v->str = t->value;
			}
			next(P);
			return v;
		case TK_EOF:
			break;
	}
	unexpected(P, NULL);
	return NULL; /* not reached */
}

static void
parse_arguments(Parser *P, bool is_const, int *nargs, GqlArgument **args)
{
	Vec v = {NULL, 0, 0, sizeof(GqlArgument)};

	*nargs = 0;
	*args = NULL;
	if (!peek_punct(P, '('))
		return;
	next(P);
	do
	{
		GqlArgument a;

		a.loc = tok(P)->loc;
		a.name = expect_name(P);
		expect_punct(P, ':');
		a.value = parse_value(P, is_const);
		vec_push(P, &v, &a);
	} while (!peek_punct(P, ')'));
	next(P);
	*nargs = v.n;
	*args = v.items;
}

static void
parse_directives(Parser *P, bool is_const, int *ndirs, GqlDirective **dirs)
{
	Vec v = {NULL, 0, 0, sizeof(GqlDirective)};

	while (peek_punct(P, '@'))
	{
		GqlDirective d;

		d.loc = tok(P)->loc;
		next(P);
		d.name = expect_name(P);
		parse_arguments(P, is_const, &d.nargs, &d.args);
		vec_push(P, &v, &d);
	}
	*ndirs = v.n;
	*dirs = v.items;
}

static GqlSelection *
parse_selection(Parser *P)
{
	GqlSelection *s = gql_alloc(&P->lx, sizeof(GqlSelection));

	s->loc = tok(P)->loc;
	if (peek_punct(P, '.'))
	{
		next(P);
		if (tok(P)->kind == TK_NAME && strcmp(tok(P)->value, "on") != 0)
		{
			s->kind = GQL_SEL_SPREAD;
			s->name = expect_name(P);
			parse_directives(P, false, &s->ndirs, &s->dirs);
			return s;
		}
		s->kind = GQL_SEL_INLINE;
		if (peek_keyword(P, "on"))
		{
			next(P);
			s->type_cond = expect_name(P);
		}
		parse_directives(P, false, &s->ndirs, &s->dirs);
		s->sel = parse_selection_set(P);
		return s;
	}
	s->kind = GQL_SEL_FIELD;
	s->name = expect_name(P);
	if (peek_punct(P, ':'))
	{
		next(P);
		s->alias = s->name;
		s->name = expect_name(P);
		if (P->lx.limits->max_aliases > 0 && ++P->aliases > P->lx.limits->max_aliases)
			gql_fail(&P->lx, s->loc, true, "the document has more than %d aliases", P->lx.limits->max_aliases);
	}
	parse_arguments(P, false, &s->nargs, &s->args);
	parse_directives(P, false, &s->ndirs, &s->dirs);
	if (peek_punct(P, '{'))
		s->sel = parse_selection_set(P);
	return s;
}

static GqlSelectionSet *
parse_selection_set(Parser *P)
{
	GqlSelectionSet *set = gql_alloc(&P->lx, sizeof(GqlSelectionSet));
	Vec v = {NULL, 0, 0, sizeof(GqlSelection *)};

	set->loc = tok(P)->loc;
	expect_punct(P, '{');
	enter(P, set->loc);
	do
	{
		GqlSelection *s = parse_selection(P);

		vec_push(P, &v, &s);
	} while (!peek_punct(P, '}'));
	next(P);
	leave(P);
	set->n = v.n;
	set->items = v.items;
	return set;
}

static GqlTypeRef *
parse_type(Parser *P)
{
	GqlTypeRef *t = gql_alloc(&P->lx, sizeof(GqlTypeRef));

	t->loc = tok(P)->loc;
	if (peek_punct(P, '['))
	{
		enter(P, t->loc);
		next(P);
		t->kind = GQL_T_LIST;
		t->of = parse_type(P);
		expect_punct(P, ']');
		leave(P);
	}
	else
	{
		t->kind = GQL_T_NAMED;
		t->name = expect_name(P);
	}
	if (peek_punct(P, '!'))
	{
		GqlTypeRef *nn = gql_alloc(&P->lx, sizeof(GqlTypeRef));

		nn->kind = GQL_T_NON_NULL;
		nn->loc = t->loc;
		nn->of = t;
		next(P);
		return nn;
	}
	return t;
}

static void
parse_variable_definitions(Parser *P, GqlDefinition *d)
{
	Vec v = {NULL, 0, 0, sizeof(GqlVarDef)};

	if (!peek_punct(P, '('))
		return;
	next(P);
	do
	{
		GqlVarDef vd;

		memset(&vd, 0, sizeof(vd));
		vd.loc = tok(P)->loc;
		expect_punct(P, '$');
		vd.name = expect_name(P);
		expect_punct(P, ':');
		vd.type = parse_type(P);
		if (peek_punct(P, '='))
		{
			next(P);
			vd.def = parse_value(P, true);
		}
		parse_directives(P, true, &vd.ndirs, &vd.dirs);
		vec_push(P, &v, &vd);
	} while (!peek_punct(P, ')'));
	next(P);
	d->nvars = v.n;
	d->vars = v.items;
}

static GqlDefinition *
parse_definition(Parser *P)
{
	GqlDefinition *d = gql_alloc(&P->lx, sizeof(GqlDefinition));

	d->loc = tok(P)->loc;
	if (peek_punct(P, '{'))
	{
		d->op = GQL_OP_QUERY;
		d->sel = parse_selection_set(P);
		return d;
	}
	if (tok(P)->kind != TK_NAME)
		unexpected(P, NULL);
	if (peek_keyword(P, "fragment"))
	{
		next(P);
		d->is_fragment = true;
		if (peek_keyword(P, "on"))
			unexpected(P, NULL);
		d->name = expect_name(P);
		if (!peek_keyword(P, "on"))
			unexpected(P, "\"on\"");
		next(P);
		d->type_cond = expect_name(P);
		parse_directives(P, false, &d->ndirs, &d->dirs);
		d->sel = parse_selection_set(P);
		return d;
	}
	if (peek_keyword(P, "query"))
		d->op = GQL_OP_QUERY;
	else if (peek_keyword(P, "mutation"))
		d->op = GQL_OP_MUTATION;
	else if (peek_keyword(P, "subscription"))
		d->op = GQL_OP_SUBSCRIPTION;
	else
		unexpected(P, NULL); /* SDL and anything else */
	next(P);
	if (tok(P)->kind == TK_NAME)
		d->name = expect_name(P);
	parse_variable_definitions(P, d);
	parse_directives(P, false, &d->ndirs, &d->dirs);
	d->sel = parse_selection_set(P);
	return d;
}

GqlDocument *
gql_parse(const char *src, size_t len, const GqlLimits *limits,
		  GqlAllocFn alloc, void *alloc_ctx, GqlParseError *err)
{
	Parser P;
	GqlDocument *doc;
	Vec defs = {NULL, 0, 0, sizeof(GqlDefinition *)};

	memset(&P, 0, sizeof(P));
	memset(err, 0, sizeof(*err));
	P.lx.p = (const unsigned char *) src;
	P.lx.end = (const unsigned char *) src + len;
	P.lx.line = 1;
	P.lx.column = 1;
	P.lx.limits = limits;
	P.lx.alloc = alloc;
	P.lx.alloc_ctx = alloc_ctx;
	P.lx.err = err;
	if (setjmp(P.lx.fail) != 0)
		return NULL;
	doc = gql_alloc(&P.lx, sizeof(GqlDocument));
	next(&P);
	do
	{
		GqlDefinition *d = parse_definition(&P);

		vec_push(&P, &defs, &d);
	} while (tok(&P)->kind != TK_EOF);
	doc->n = defs.n;
	doc->defs = defs.items;
	return doc;
}
