/*-------------------------------------------------------------------------
 *
 * graphql_fuzz.c
 *	  libFuzzer harness for bv_graphql's GraphQL lexer and parser (make fuzz).
 *
 * Compiles the very files the extension uses, extensions/bv_graphql/
 * gql_lex.c and gql_parse.c, which are plain C by design (no PostgreSQL),
 * so no stub stands between the fuzzer and the code that runs in the
 * server.  Built with AddressSanitizer and UndefinedBehaviorSanitizer by
 * tools/fuzz.sh.
 *
 * Besides "does not crash", it checks properties, aborting when one fails:
 *	- a document that parses has at least one definition, every name in it
 *	  is a GraphQL Name, every location lies inside the input (line and
 *	  column at least 1, line at most the number of lines);
 *	- an error has a message and a location inside the input;
 *	- the limits hold: no parsed document nests deeper than max_depth.
 *
 * Each input is parsed with an arena of malloc'ed blocks freed at the end,
 * so that ASan sees every overrun and LeakSanitizer every leak.
 *
 *-------------------------------------------------------------------------
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gql_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)  \
	do               \
	{                \
		if (!(cond)) \
			abort(); \
	} while (0)

#define MAX_DEPTH 24

/* Each block starts with a header holding the next block (aligned for any data). */
typedef union Block
{
	union Block *next;
	max_align_t align;
} Block;

static void *
arena_alloc(void *ctx, size_t size)
{
	Block **head = ctx;
	Block *b = calloc(1, sizeof(Block) + size);

	if (b == NULL)
		return NULL;
	b->next = *head;
	*head = b;
	return b + 1;
}

static int nlines;

static void
check_loc(GqlLoc loc)
{
	CHECK(loc.line >= 1 && loc.column >= 1 && loc.line <= nlines);
}

static void
check_name(const char *s)
{
	CHECK(gql_is_name(s));
}

static void
check_value(const GqlValue *v, int depth)
{
	CHECK(depth <= MAX_DEPTH + 1);
	check_loc(v->loc);
	switch (v->kind)
	{
		case GQL_V_VARIABLE:
		case GQL_V_ENUM:
			check_name(v->str);
			break;
		case GQL_V_INT:
		case GQL_V_FLOAT:
		case GQL_V_STRING:
			CHECK(v->str != NULL);
			break;
		case GQL_V_LIST:
			for (int i = 0; i < v->n; i++)
				check_value(v->items[i], depth + 1);
			break;
		case GQL_V_OBJECT:
			for (int i = 0; i < v->n; i++)
			{
				check_name(v->names[i]);
				check_value(v->items[i], depth + 1);
			}
			break;
		default:
			break;
	}
}

static void
check_args(int n, const GqlArgument *args, int depth)
{
	for (int i = 0; i < n; i++)
	{
		check_name(args[i].name);
		check_value(args[i].value, depth);
	}
}

static void
check_dirs(int n, const GqlDirective *dirs, int depth)
{
	for (int i = 0; i < n; i++)
	{
		check_name(dirs[i].name);
		check_args(dirs[i].nargs, dirs[i].args, depth);
	}
}

static void
check_set(const GqlSelectionSet *set, int depth)
{
	CHECK(set != NULL && set->n > 0 && depth <= MAX_DEPTH);
	for (int i = 0; i < set->n; i++)
	{
		const GqlSelection *s = set->items[i];

		check_loc(s->loc);
		check_dirs(s->ndirs, s->dirs, depth);
		switch (s->kind)
		{
			case GQL_SEL_FIELD:
				check_name(s->name);
				if (s->alias)
					check_name(s->alias);
				check_args(s->nargs, s->args, depth);
				if (s->sel)
					check_set(s->sel, depth + 1);
				break;
			case GQL_SEL_SPREAD:
				check_name(s->name);
				CHECK(s->sel == NULL);
				break;
			case GQL_SEL_INLINE:
				if (s->type_cond)
					check_name(s->type_cond);
				check_set(s->sel, depth + 1);
				break;
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	GqlLimits limits = {2000, MAX_DEPTH, 50};
	GqlParseError err;
	Block *head = NULL;
	GqlDocument *doc;

	nlines = 1;
	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n' || (data[i] == '\r' && !(i + 1 < size && data[i + 1] == '\n')))
			nlines++;
	doc = gql_parse((const char *) data, size, &limits, arena_alloc, &head, &err);
	if (doc == NULL)
	{
		CHECK(err.message[0] != '\0');
		check_loc(err.loc);
	}
	else
	{
		CHECK(doc->n > 0);
		for (int i = 0; i < doc->n; i++)
		{
			const GqlDefinition *d = doc->defs[i];

			check_loc(d->loc);
			if (d->name)
				check_name(d->name);
			if (d->type_cond)
				check_name(d->type_cond);
			for (int k = 0; k < d->nvars; k++)
			{
				check_name(d->vars[k].name);
				if (d->vars[k].def)
					check_value(d->vars[k].def, 1);
			}
			check_dirs(d->ndirs, d->dirs, 1);
			check_set(d->sel, 1);
		}
	}
	while (head)
	{
		Block *n = head->next;

		free(head);
		head = n;
	}
	return 0;
}
