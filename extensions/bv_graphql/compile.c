/*-------------------------------------------------------------------------
 *
 * compile.c
 *	  Selection sets to SQL: a query operation, however nested, becomes ONE
 *	  SQL statement that builds the whole "data" object as json.
 *
 * The steps of the specification's execution are done at compile time,
 * since every value is known then: CollectFields (fragments, inline
 * fragments, @skip / @include, fields of one response key merged), argument
 * coercion against the schema of types.c, and validation where it matters
 * (unknown fields, arguments, types, fragments and variables, fragment
 * cycles, leaf and composite selections, required arguments).  Errors are
 * raised with gql_error(), which records the location and throws an
 * ERRCODE_GRAPHQL_REQUEST error that resolve.c turns into a GraphQL error;
 * nothing in this file touches SPI or takes locks, so catching that error
 * without a subtransaction is safe.
 *
 * The SQL: every identifier comes from the catalog and is quoted
 * (quote_identifier / quote_qualified_identifier), every client value is a
 * parameter ($n, text, CAST to the column's type), response keys (GraphQL
 * Names) and introspection answers are literals.  The statement text
 * depends only on the shape of the query, so resolve.c keys its saved
 * plans by it.  A connection is one subquery over a LIMIT n keyset page:
 *
 *	(SELECT json_build_object('edges', json_agg(...), 'pageInfo', ...)
 *	   FROM (SELECT <visible columns> FROM t
 *	          WHERE <join> AND <filter> AND <cursor> ORDER BY k LIMIT n) a
 *	  GROUP BY ())
 *
 * A backward page is read with k reversed and put back in order around it;
 * whether there is a further page is counted over LIMIT n + 1 only when
 * pageInfo asks.  json_agg takes the page's rows in the subquery's order.
 *
 * Cursors are base64 of the JSON array of the sort-key values (the order
 * columns, then the primary key), so pages are stable under inserts.
 * Memory: everything is palloc'd in the caller's (per-request) context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/base64.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "bv_graphql.h"

GqlLoc gql_error_loc;

void
gql_error(GqlLoc loc, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	gql_error_loc = loc;
	ereport(ERROR,
			(errcode(ERRCODE_GRAPHQL_REQUEST),
			 errmsg_internal("%s", buf)));
	pg_unreachable();
}

static const GqlLoc noloc = {0, 0};

/*
 * Count rows records per enclosing row against bv_graphql.max_records and
 * return the enclosing scale for what nests inside them.  Pages multiply
 * (300 parents x 300 children x 300 grandchildren is 27 million records,
 * whatever the document's size), so the budget is checked at compile time
 * on the worst case, before anything runs.
 */
double
gql_count_records(GCompile *c, double rows, GqlLoc loc)
{
	double scale = c->scale * rows;

	c->records += scale;
	if (c->records > (double) bv_graphql_max_records)
		gql_error(loc,
				  "the operation may read more than %d records (bv_graphql.max_records): nested pages multiply; "
				  "ask for smaller pages (\"first\" / \"last\") or fewer nested collections.",
				  bv_graphql_max_records);
	return scale;
}

void
gql_append_literal(StringInfo buf, const char *s)
{
	appendStringInfoString(buf, quote_literal_cstr(s));
}

char *
gql_new_alias(GCompile *c)
{
	return psprintf("t%d", ++c->alias_seq);
}

/* ---------- parameters ---------- */

static int
add_param(GCompile *c, Oid type, Datum value, bool isnull)
{
	if (c->nparams >= 60000)
		gql_error(noloc, "the operation needs more than 60000 values");
	if (c->nparams == c->maxparams)
	{
		c->maxparams = c->maxparams ? c->maxparams * 2 : 16;
		c->ptypes = c->ptypes ? repalloc(c->ptypes, sizeof(Oid) * c->maxparams) : palloc(sizeof(Oid) * c->maxparams);
		c->pvalues = c->pvalues ? repalloc(c->pvalues, sizeof(Datum) * c->maxparams) : palloc(sizeof(Datum) * c->maxparams);
		c->pnulls = c->pnulls ? repalloc(c->pnulls, c->maxparams) : palloc(c->maxparams);
	}
	c->ptypes[c->nparams] = type;
	c->pvalues[c->nparams] = value;
	c->pnulls[c->nparams] = isnull ? 'n' : ' ';
	return ++c->nparams;
}

int
gql_param(GCompile *c, const char *text)
{
	return add_param(c, TEXTOID, text ? CStringGetTextDatum(text) : (Datum) 0, text == NULL);
}

int
gql_param_array(GCompile *c, List *texts)
{
	int n = list_length(texts), i = 0;
	Datum *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool *nulls = palloc(sizeof(bool) * Max(n, 1));
	int dims[1] = {n}, lbs[1] = {1};
	ListCell *lc;

	foreach (lc, texts)
	{
		char *s = lfirst(lc);

		nulls[i] = s == NULL;
		elems[i++] = s ? CStringGetTextDatum(s) : (Datum) 0;
	}
	return add_param(c, TEXTARRAYOID,
					 PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT)),
					 false);
}

/* ---------- values ---------- */

GqlValue *
gql_resolve_var(GCompile *c, GqlValue *v)
{
	if (v == NULL || v->kind != GQL_V_VARIABLE)
		return v;
	for (int i = 0; i < c->nvars; i++)
		if (strcmp(c->vars[i].name, v->str) == 0)
			return c->vars[i].value;
	gql_error(v->loc, "Variable \"$%.64s\" is not defined.", v->str);
}

static bool
is_null(GqlValue *v)
{
	return v == NULL || v->kind == GQL_V_NULL;
}

static const char *
kind_name(GqlValue *v)
{
	switch (v->kind)
	{
		case GQL_V_INT:
			return "an Int";
		case GQL_V_FLOAT:
			return "a Float";
		case GQL_V_STRING:
			return "a String";
		case GQL_V_BOOLEAN:
			return "a Boolean";
		case GQL_V_NULL:
			return "null";
		case GQL_V_ENUM:
			return "an enum value";
		case GQL_V_LIST:
			return "a list";
		case GQL_V_OBJECT:
			return "an input object";
		default:
			return "a variable";
	}
}

static bool
all_digits(const char *s)
{
	if (*s == '-')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/*
 * The text of a scalar or enum input value, for a parameter; NULL for null.
 * what names the argument or input field in errors.
 */
char *
gql_scalar_text(GCompile *c, GqlValue *v, GType *t, const char *what)
{
	v = gql_resolve_var(c, v);
	if (is_null(v))
		return NULL;
	if (t->kind == GK_ENUM)
	{
		if (v->kind == GQL_V_ENUM || (v->kind == GQL_V_STRING && v->from_json))
			for (int i = 0; i < t->nvalues; i++)
				if (strcmp(t->values[i].name, v->str) == 0)
					return pstrdup(v->str);
		if (v->kind == GQL_V_ENUM || (v->kind == GQL_V_STRING && v->from_json))
			gql_error(v->loc, "Value \"%.64s\" does not exist in \"%s\" enum (%s).", v->str, t->name, what);
		gql_error(v->loc, "Expected a value of enum \"%s\" for %s, found %s.", t->name, what, kind_name(v));
	}
	switch (t->scalar)
	{
		case GS_INT:
			if (v->kind == GQL_V_INT)
			{
				char *end;
				long n;

				errno = 0;
				n = strtol(v->str, &end, 10);
				if (errno == 0 && *end == '\0' && n >= PG_INT32_MIN && n <= PG_INT32_MAX)
					return pstrdup(v->str);
				gql_error(v->loc, "Int cannot represent %s: the value is out of range.", what);
			}
			break;
		case GS_FLOAT:
			if (v->kind == GQL_V_INT || v->kind == GQL_V_FLOAT)
				return pstrdup(v->str);
			break;
		case GS_BIGINT:
			if (v->kind == GQL_V_INT || (v->kind == GQL_V_STRING && all_digits(v->str)))
				return pstrdup(v->str);
			break;
		case GS_BIGFLOAT:
			if (v->kind == GQL_V_INT || v->kind == GQL_V_FLOAT || v->kind == GQL_V_STRING)
				return pstrdup(v->str);
			break;
		case GS_ID:
			if (v->kind == GQL_V_INT || v->kind == GQL_V_STRING)
				return pstrdup(v->str);
			break;
		case GS_BOOLEAN:
			if (v->kind == GQL_V_BOOLEAN)
				return pstrdup(v->boolean ? "true" : "false");
			break;
		case GS_JSON:
		{
			StringInfoData b;

			initStringInfo(&b);
			gql_json_value(c, v, &b);
			return b.data;
		}
		default:
			if (v->kind == GQL_V_STRING)
				return pstrdup(v->str);
			break;
	}
	gql_error(v->loc, "Expected a value of type \"%s\" for %s, found %s.", t->name, what, kind_name(v));
}

/* Input coercion of lists: a single value stands for a list of one. */
static int
as_list(GCompile *c, GqlValue *v, GqlValue ***items)
{
	v = gql_resolve_var(c, v);
	if (is_null(v))
	{
		*items = NULL;
		return 0;
	}
	if (v->kind == GQL_V_LIST)
	{
		*items = v->items;
		return v->n;
	}
	*items = palloc(sizeof(GqlValue *));
	(*items)[0] = v;
	return 1;
}

static GqlValue *
expect_object(GCompile *c, GqlValue *v, GType *t)
{
	v = gql_resolve_var(c, v);
	if (is_null(v))
		return NULL;
	if (v->kind != GQL_V_OBJECT)
		gql_error(v->loc, "Expected a value of type \"%s\", found %s.", t->name, kind_name(v));
	for (int i = 0; i < v->n; i++)
	{
		if (gql_input(t->ninputs, t->inputs, v->names[i]) == NULL)
			gql_error(v->name_locs ? v->name_locs[i] : v->loc,
					  "Field \"%.64s\" is not defined by type \"%s\".", v->names[i], t->name);
		for (int k = 0; k < i; k++)
			if (strcmp(v->names[k], v->names[i]) == 0)
				gql_error(v->loc, "There can be only one input field named \"%.64s\".", v->names[i]);
	}
	return v;
}

/* ---------- directives and CollectFields ---------- */

static bool
included(GCompile *c, int ndirs, GqlDirective *dirs)
{
	for (int i = 0; i < ndirs; i++)
	{
		GqlDirective *d = &dirs[i];
		bool skip = strcmp(d->name, "skip") == 0;
		GqlValue *v = NULL;

		if (!skip && strcmp(d->name, "include") != 0)
			gql_error(d->loc, "Unknown directive \"@%.64s\".", d->name);
		for (int k = 0; k < d->nargs; k++)
		{
			if (strcmp(d->args[k].name, "if") != 0)
				gql_error(d->args[k].loc, "Unknown argument \"%.64s\" on directive \"@%s\".", d->args[k].name, d->name);
			v = gql_resolve_var(c, d->args[k].value);
		}
		if (v == NULL || v->kind != GQL_V_BOOLEAN)
			gql_error(d->loc, "Directive \"@%s\" argument \"if\" of type \"Boolean!\" is required.", d->name);
		if (v->boolean == skip)
			return false;
	}
	return true;
}

static bool
applies(GCompile *c, GType *parent, const char *type_cond, GqlLoc loc)
{
	GType *t;

	if (type_cond == NULL || strcmp(type_cond, parent->name) == 0)
		return true;
	t = gql_type_by_name(c->schema, type_cond);
	if (t == NULL)
		gql_error(loc, "Unknown type \"%.64s\".", type_cond);
	if (t->kind != GK_OBJECT && t->kind != GK_INTERFACE && t->kind != GK_UNION)
		gql_error(loc, "Fragment cannot condition on non composite type \"%s\".", t->name);
	for (int i = 0; i < parent->nifaces; i++)
		if (parent->ifaces[i] == t)
			return true;
	return false;
}

static GqlDefinition *
fragment(GCompile *c, const char *name, GqlLoc loc)
{
	for (int i = 0; i < c->doc->n; i++)
		if (c->doc->defs[i]->is_fragment && strcmp(c->doc->defs[i]->name, name) == 0)
			return c->doc->defs[i];
	gql_error(loc, "Unknown fragment \"%.64s\".", name);
}

static void
collect_set(GCompile *c, GType *parent, GqlSelectionSet *set, List **out, List *visiting)
{
	check_stack_depth();
	for (int i = 0; i < set->n; i++)
	{
		GqlSelection *s = set->items[i];

		if (!included(c, s->ndirs, s->dirs))
			continue;
		if (s->kind == GQL_SEL_SPREAD)
		{
			GqlDefinition *f = fragment(c, s->name, s->loc);
			ListCell *lc;

			foreach (lc, visiting)
				if (strcmp((char *) lfirst(lc), f->name) == 0)
					gql_error(s->loc, "Cannot spread fragment \"%.64s\" within itself.", f->name);
			if (!included(c, f->ndirs, f->dirs) || !applies(c, parent, f->type_cond, f->loc))
				continue;
			collect_set(c, parent, f->sel, out, lappend(list_copy(visiting), (char *) f->name));
		}
		else if (s->kind == GQL_SEL_INLINE)
		{
			if (applies(c, parent, s->type_cond, s->loc))
				collect_set(c, parent, s->sel, out, visiting);
		}
		else
		{
			const char *key = s->alias ? s->alias : s->name;
			GField *field = NULL;
			GSel *sel = NULL;
			ListCell *lc;
			GType *named;

			if (bv_graphql_max_fields > 0 && ++c->nfields > bv_graphql_max_fields)
				gql_error(s->loc, "the operation selects more than %d fields (bv_graphql.max_fields)", bv_graphql_max_fields);
			if (strcmp(s->name, "__typename") != 0)
			{
				if (parent == c->schema->query && strcmp(s->name, "__schema") == 0)
					field = c->schema->f_schema;
				else if (parent == c->schema->query && strcmp(s->name, "__type") == 0)
					field = c->schema->f_type;
				else
					field = gql_field(parent, s->name);
				if (field == NULL)
					gql_error(s->loc, "Cannot query field \"%.64s\" on type \"%s\".", s->name, parent->name);
				named = gql_named(field->type);
				if ((named->kind == GK_OBJECT || named->kind == GK_INTERFACE) && s->sel == NULL)
					gql_error(s->loc, "Field \"%s\" of type \"%s\" must have a selection of subfields.", s->name, named->name);
				if (named->kind != GK_OBJECT && named->kind != GK_INTERFACE && s->sel != NULL)
					gql_error(s->loc, "Field \"%s\" must not have a selection since type \"%s\" has no subfields.", s->name, named->name);
				for (int k = 0; k < s->nargs; k++)
					if (gql_input(field->nargs, field->args, s->args[k].name) == NULL)
						gql_error(s->args[k].loc, "Unknown argument \"%.64s\" on field \"%s.%s\".", s->args[k].name, parent->name, s->name);
			}
			else if (s->sel != NULL || s->nargs > 0)
				gql_error(s->loc, "Field \"__typename\" takes no arguments and no selection.");
			foreach (lc, *out)
			{
				GSel *o = lfirst(lc);

				if (strcmp(o->key, key) == 0)
				{
					if (strcmp(o->first->name, s->name) != 0)
						gql_error(s->loc, "Fields \"%.64s\" conflict because \"%.64s\" and \"%.64s\" are different fields.",
								  key, o->first->name, s->name);
					sel = o;
					break;
				}
			}
			if (sel == NULL)
			{
				sel = palloc0(sizeof(GSel));
				sel->key = key;
				sel->field = field;
				sel->first = s;
				*out = lappend(*out, sel);
			}
			if (s->sel)
				sel->sets = lappend(sel->sets, s->sel);
		}
	}
}

List *
gql_collect(GCompile *c, GType *parent, List *sets)
{
	List *out = NIL;
	ListCell *lc;

	foreach (lc, sets)
		collect_set(c, parent, lfirst(lc), &out, NIL);
	return out;
}

GqlValue *
gql_arg(GCompile *c, const GSel *sel, const char *name)
{
	GInput *in = gql_input(sel->field->nargs, sel->field->args, name);
	GqlValue *v = NULL;

	for (int k = 0; k < sel->first->nargs; k++)
		if (strcmp(sel->first->args[k].name, name) == 0)
		{
			if (v != NULL)
				gql_error(sel->first->args[k].loc, "There can be only one argument named \"%.64s\".", name);
			v = gql_resolve_var(c, sel->first->args[k].value);
		}
	if (v == NULL && in && in->default_value)
	{
		v = palloc0(sizeof(GqlValue));
		v->kind = GQL_V_INT; /* the only defaults are Ints and Booleans */
		v->str = in->default_value;
		if (strcmp(in->default_value, "false") == 0 || strcmp(in->default_value, "true") == 0)
		{
			v->kind = GQL_V_BOOLEAN;
			v->boolean = in->default_value[0] == 't';
		}
	}
	if (is_null(v) && in && in->type->kind == GK_NON_NULL)
		gql_error(sel->first->loc, "Argument \"%s\" of type \"%s!\" is required on field \"%s\".",
				  name, gql_named(in->type)->name, sel->field->name);
	return v;
}

/* ---------- nodeId and cursors ---------- */

static char *
b64_decode(const char *s, int *len)
{
	int n = strlen(s);
	char *out = palloc(pg_b64_dec_len(n) + 1);

	*len = pg_b64_decode(s, n, out, pg_b64_dec_len(n));
	if (*len < 0)
		return NULL;
	out[*len] = '\0';
	return out;
}

/* The elements of a base64 JSON array as text (NULL for JSON null). */
static List *
decode_json_array(const char *b64, bool *ok)
{
	int len;
	char *json = b64_decode(b64, &len);
	List *out = NIL;
	Jsonb *jb;
	JsonbIterator *it;
	JsonbValue v;
	JsonbIteratorToken tok;
	int depth = 0;
	MemoryContext cxt = CurrentMemoryContext;

	*ok = false;
	if (json == NULL || len == 0 || (int) strlen(json) != len || !pg_verifymbstr(json, len, true))
		return NIL;
	/* jsonb_in holds no resources: its error can be caught without a subtransaction */
	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		jb = NULL;
	}
	PG_END_TRY();
	if (jb == NULL || !JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
		return NIL;
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
		{
			if (++depth > 1)
				return NIL;
		}
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			depth--;
		else if (tok == WJB_ELEM)
		{
			switch (v.type)
			{
				case jbvNull:
					out = lappend(out, NULL);
					break;
				case jbvString:
					out = lappend(out, pnstrdup(v.val.string.val, v.val.string.len));
					break;
				case jbvNumeric:
					out = lappend(out, DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric))));
					break;
				case jbvBool:
					out = lappend(out, pstrdup(v.val.boolean ? "true" : "false"));
					break;
				default:
					return NIL;
			}
		}
		else
			return NIL;
	}
	*ok = true;
	return out;
}

/* The table and key values a nodeId names; errors when it names nothing. */
static GTable *
decode_node_id(GCompile *c, const char *id, GqlLoc loc, List **keys)
{
	bool ok;
	List *parts = decode_json_array(id, &ok);
	ListCell *lc;

	if (!ok || list_length(parts) < 3 || linitial(parts) == NULL || lsecond(parts) == NULL)
		gql_error(loc, "Invalid nodeId: it is not one this service issued.");
	foreach (lc, c->schema->tables)
	{
		GTable *t = lfirst(lc);

		if (t->npk > 0 && strcmp(t->schema, linitial(parts)) == 0 && strcmp(t->name, lsecond(parts)) == 0)
		{
			if (list_length(parts) != 2 + t->npk)
				break;
			*keys = list_copy_tail(parts, 2);
			return t;
		}
	}
	gql_error(loc, "Invalid nodeId: it names no record type of this schema.");
}

static void
append_node_id_expr(GCompile *c, GTable *t, const char *alias)
{
	StringInfo b = &c->sql;

	appendStringInfoString(b, "translate(encode(convert_to(json_build_array(");
	gql_append_literal(b, t->schema);
	appendStringInfoString(b, ", ");
	gql_append_literal(b, t->name);
	for (int k = 0; k < t->npk; k++)
		appendStringInfo(b, ", %s.%s", alias, quote_identifier(t->cols[t->pk[k]].name));
	appendStringInfoString(b, ")::text, 'UTF8'), 'base64'), E'\\n', '')");
}

/* alias.pk = $n AND ... for the key values of a nodeId */
static void
append_key_match(GCompile *c, GTable *t, const char *alias, List *keys)
{
	for (int k = 0; k < t->npk; k++)
	{
		GColumn *col = &t->cols[t->pk[k]];
		int p = gql_param(c, list_nth(keys, k));

		appendStringInfo(&c->sql, "%s%s.%s = CAST($%d AS %s)", k ? " AND " : "", alias,
						 quote_identifier(col->name), p, col->sqltype);
	}
}

/* ---------- filters ---------- */

static void
column_op(GCompile *c, GTable *t, const char *alias, GColumn *col, const char *op, GqlValue *v, GqlLoc loc)
{
	StringInfo b = &c->sql;
	const char *colref = psprintf("%s.%s", alias, quote_identifier(col->name));
	static const char *const cmp_ops[][2] = {{"eq", "="}, {"neq", "<>"}, {"lt", "<"}, {"lte", "<="}, {"gt", ">"}, {"gte", ">="}, {"like", "LIKE"}, {"ilike", "ILIKE"}};
	const char *what = psprintf("\"%s.%s\"", col->gname, op);

	for (int i = 0; i < lengthof(cmp_ops); i++)
		if (strcmp(op, cmp_ops[i][0]) == 0)
		{
			char *text = gql_scalar_text(c, v, col->gtype, what);

			if (text == NULL)
				appendStringInfoString(b, "true");
			else
				appendStringInfo(b, "%s %s CAST($%d AS %s)", colref, cmp_ops[i][1], gql_param(c, text), col->sqltype);
			return;
		}
	if (strcmp(op, "in") == 0)
	{
		GqlValue **items;
		int n = as_list(c, v, &items);
		List *texts = NIL;

		if (is_null(gql_resolve_var(c, v)))
		{
			appendStringInfoString(b, "true");
			return;
		}
		for (int i = 0; i < n; i++)
		{
			char *text = gql_scalar_text(c, items[i], col->gtype, what);

			if (text == NULL)
				gql_error(loc, "Expected non-null values in %s.", what);
			texts = lappend(texts, text);
		}
		appendStringInfo(b, "%s = ANY (CAST($%d AS %s[]))", colref, gql_param_array(c, texts), col->sqltype);
		return;
	}
	if (strcmp(op, "is") == 0)
	{
		char *text = gql_scalar_text(c, v, c->schema->filter_is, what);

		if (text == NULL)
			appendStringInfoString(b, "true");
		else
			appendStringInfo(b, "%s IS %s", colref, strcmp(text, "NULL") == 0 ? "NULL" : "NOT NULL");
		return;
	}
	gql_error(loc, "Unknown filter operator \"%.64s\".", op);
}

void
gql_where_filter(GCompile *c, GTable *t, const char *alias, GqlValue *filter)
{
	StringInfo b = &c->sql;
	GqlValue *f = expect_object(c, filter, t->filter);

	if (++c->depth > bv_graphql_max_depth)
		gql_error(filter ? filter->loc : noloc, "the filter nests deeper than %d levels", bv_graphql_max_depth);
	/* variables escape the document's token limit: count filter objects too */
	if (++c->nfilters > bv_graphql_max_fields)
		gql_error(filter ? filter->loc : noloc, "the operation's filters hold more than %d objects (bv_graphql.max_fields)",
				  bv_graphql_max_fields);
	appendStringInfoString(b, "(true");
	for (int i = 0; f && i < f->n; i++)
	{
		const char *name = f->names[i];
		GqlValue *v = gql_resolve_var(c, f->items[i]);

		if (is_null(v))
			continue;
		appendStringInfoString(b, " AND ");
		if (strcmp(name, "and") == 0 || strcmp(name, "or") == 0)
		{
			GqlValue **items;
			int n = as_list(c, v, &items);
			bool and = name[0] == 'a';

			appendStringInfoString(b, n == 0 ? (and? "true" : "false") : "(");
			for (int k = 0; k < n; k++)
			{
				if (k)
					appendStringInfoString(b, and? " AND " : " OR ");
				gql_where_filter(c, t, alias, items[k]);
			}
			if (n)
				appendStringInfoChar(b, ')');
		}
		else if (strcmp(name, "not") == 0)
		{
			appendStringInfoString(b, "NOT coalesce(");
			gql_where_filter(c, t, alias, v);
			appendStringInfoString(b, ", false)");
		}
		else if (strcmp(name, "nodeId") == 0)
		{
			GqlValue *ops = expect_object(c, v, gql_input(t->filter->ninputs, t->filter->inputs, "nodeId")->type);

			appendStringInfoString(b, "(true");
			for (int k = 0; k < ops->n; k++)
			{
				GqlValue *ov = gql_resolve_var(c, ops->items[k]);
				char *id;
				List *keys;
				bool neq = strcmp(ops->names[k], "neq") == 0;

				if (is_null(ov))
					continue;
				if (strcmp(ops->names[k], "is") == 0)
				{
					/* a record's nodeId is never null */
					char *text = gql_scalar_text(c, ov, c->schema->filter_is, "\"nodeId.is\"");

					appendStringInfoString(b, strcmp(text, "NULL") == 0 ? " AND false" : " AND true");
					continue;
				}
				if (strcmp(ops->names[k], "in") == 0)
				{
					GqlValue **items;
					int n = as_list(c, ov, &items);

					appendStringInfoString(b, " AND (false");
					for (int i = 0; i < n; i++)
					{
						id = gql_scalar_text(c, items[i], c->schema->t_id, "\"nodeId.in\"");
						if (id == NULL)
							gql_error(ov->loc, "Expected non-null values in \"nodeId.in\".");
						appendStringInfoString(b, " OR (");
						if (decode_node_id(c, id, items[i]->loc, &keys) != t)
							appendStringInfoString(b, "false");
						else
							append_key_match(c, t, alias, keys);
						appendStringInfoChar(b, ')');
					}
					appendStringInfoChar(b, ')');
					continue;
				}
				if (strcmp(ops->names[k], "eq") != 0 && !neq)
					gql_error(ov->loc, "Unknown filter operator \"%.64s\" for nodeId.", ops->names[k]);
				id = gql_scalar_text(c, ov, c->schema->t_id, "\"nodeId\"");
				appendStringInfoString(b, neq ? " AND NOT (" : " AND (");
				if (decode_node_id(c, id, ov->loc, &keys) != t)
					appendStringInfoString(b, "false");
				else
					append_key_match(c, t, alias, keys);
				appendStringInfoChar(b, ')');
			}
			appendStringInfoChar(b, ')');
		}
		else
		{
			GInput *in = gql_input(t->filter->ninputs, t->filter->inputs, name);
			GqlValue *ops = expect_object(c, v, in->type);

			appendStringInfoString(b, "(true");
			for (int k = 0; k < ops->n; k++)
			{
				appendStringInfoString(b, " AND ");
				column_op(c, t, alias, in->column, ops->names[k], ops->items[k], ops->loc);
			}
			appendStringInfoChar(b, ')');
		}
	}
	appendStringInfoChar(b, ')');
	c->depth--;
}

/* ---------- objects ---------- */

static void connection_expr(GCompile *c, GTable *t, const GSel *sel, GRel *rel, const char *parent_alias);

static void
append_key(GCompile *c, bool *first, const char *key)
{
	if (!*first)
		appendStringInfoString(&c->sql, ", ");
	*first = false;
	gql_append_literal(&c->sql, key);
	appendStringInfoString(&c->sql, ", ");
}

static void
check_pairs(List *sels, GqlLoc loc)
{
	if (list_length(sels) > 50)
		gql_error(loc, "a selection set may select at most 50 fields of one object");
}

static void
column_expr(GCompile *c, GColumn *col, const char *alias)
{
	GScalar k = col->gtype->kind == GK_SCALAR ? col->gtype->scalar : GS_STRING;

	if (k == GS_BIGINT || k == GS_BIGFLOAT)
		appendStringInfo(&c->sql, "(%s.%s)::text", alias, quote_identifier(col->name));
	else
		appendStringInfo(&c->sql, "%s.%s", alias, quote_identifier(col->name));
}

void
gql_object_expr(GCompile *c, GTable *t, const char *alias, List *sets)
{
	List *sels = gql_collect(c, t->type, sets);
	ListCell *lc;
	bool first = true;

	check_pairs(sels, noloc);
	if (++c->depth > bv_graphql_max_depth)
		gql_error(noloc, "the operation nests deeper than %d levels", bv_graphql_max_depth);
	appendStringInfoString(&c->sql, "json_build_object(");
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);

		append_key(c, &first, s->key);
		if (s->field == NULL)
		{
			gql_append_literal(&c->sql, t->gname);
			continue;
		}
		switch (s->field->kind)
		{
			case FK_COLUMN:
				column_expr(c, s->field->column, alias);
				break;
			case FK_NODE_ID:
				append_node_id_expr(c, t, alias);
				break;
			case FK_TO_ONE:
			{
				GRel *r = s->field->rel;
				char *a = gql_new_alias(c);

				appendStringInfoString(&c->sql, "(SELECT ");
				gql_object_expr(c, r->to, a, s->sets);
				appendStringInfo(&c->sql, " FROM %s %s WHERE ", r->to->qname, a);
				for (int k = 0; k < r->n; k++)
					appendStringInfo(&c->sql, "%s%s.%s = %s.%s", k ? " AND " : "", a,
									 quote_identifier(r->to->cols[r->to_cols[k]].name), alias,
									 quote_identifier(t->cols[r->from_cols[k]].name));
				appendStringInfoString(&c->sql, ")");
				break;
			}
			case FK_TO_MANY:
				connection_expr(c, s->field->rel->to, s, s->field->rel, alias);
				break;
			default:
				elog(ERROR, "bv_graphql: unexpected field kind %d on a table type", s->field->kind);
		}
	}
	appendStringInfoChar(&c->sql, ')');
	c->depth--;
}

/* ---------- connections ---------- */

typedef struct OrderKey
{
	GColumn *col;
	bool desc;
	bool nulls_first;
} OrderKey;

static List *
order_keys(GCompile *c, GTable *t, GqlValue *order_by)
{
	List *keys = NIL;
	GqlValue **items;
	int n = as_list(c, order_by, &items);
	ListCell *lc;

	for (int i = 0; i < n; i++)
	{
		GqlValue *o = expect_object(c, items[i], t->order);

		for (int k = 0; o && k < o->n; k++)
		{
			GInput *in = gql_input(t->order->ninputs, t->order->inputs, o->names[k]);
			char *dir = gql_scalar_text(c, o->items[k], c->schema->order_dir, "orderBy");
			OrderKey *ok;
			bool again = false;

			if (dir == NULL)
				continue;
			/*
			 * A column already ordered on cannot change the order again:
			 * skipped, so the key (and the statement, the cursor) has at
			 * most one entry per column however long the list sent.
			 */
			foreach (lc, keys)
				again |= ((OrderKey *) lfirst(lc))->col == in->column;
			if (again)
				continue;
			ok = palloc(sizeof(OrderKey));
			ok->col = in->column;
			ok->desc = dir[0] == 'D';
			ok->nulls_first = strstr(dir, "First") != NULL;
			keys = lappend(keys, ok);
		}
	}
	/* the primary key (or, without one, every orderable column) ends the key */
	for (int i = 0; i < (t->npk ? t->npk : t->ncols); i++)
	{
		GColumn *col = &t->cols[t->npk ? t->pk[i] : i];
		bool present = false;

		if (!col->orderable && !t->npk)
			continue;
		foreach (lc, keys)
			present |= ((OrderKey *) lfirst(lc))->col == col;
		if (!present)
		{
			OrderKey *ok = palloc0(sizeof(OrderKey));

			ok->col = col;
			keys = lappend(keys, ok);
		}
	}
	return keys;
}

static void
append_order(StringInfo b, List *keys, const char *alias, bool reverse)
{
	ListCell *lc;

	foreach (lc, keys)
	{
		OrderKey *k = lfirst(lc);
		bool desc = k->desc != reverse, nf = k->nulls_first != reverse;

		appendStringInfo(b, "%s%s.%s %s NULLS %s", foreach_current_index(lc) ? ", " : "", alias,
						 quote_identifier(k->col->name), desc ? "DESC" : "ASC", nf ? "FIRST" : "LAST");
	}
}

static void
append_cursor_expr(StringInfo b, List *keys, const char *alias)
{
	ListCell *lc;

	appendStringInfoString(b, "translate(encode(convert_to(json_build_array(");
	foreach (lc, keys)
		appendStringInfo(b, "%s%s.%s", foreach_current_index(lc) ? ", " : "", alias,
						 quote_identifier(((OrderKey *) lfirst(lc))->col->name));
	appendStringInfoString(b, ")::text, 'UTF8'), 'base64'), E'\\n', '')");
}

/*
 * Rows strictly after the cursor in the order (before it when reverse):
 * OR over i of (keys before i equal AND key i after), NULLs placed as the
 * order says.  Returns the condition text (its parameters are added once,
 * the text may be used twice).
 */
static char *
cursor_condition(GCompile *c, List *keys, const char *alias, const char *cursor, bool reverse, GqlLoc loc)
{
	bool ok;
	List *vals = decode_json_array(cursor, &ok);
	StringInfoData b;
	int *params;
	int n = list_length(keys);

	if (!ok || list_length(vals) != n)
		gql_error(loc, "Invalid cursor: it does not come from this collection with this order.");
	params = palloc(sizeof(int) * n);
	for (int i = 0; i < n; i++)
		params[i] = gql_param(c, list_nth(vals, i));
	initStringInfo(&b);
	appendStringInfoString(&b, "(false");
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(&b, " OR (true");
		for (int j = 0; j <= i; j++)
		{
			OrderKey *k = list_nth(keys, j);
			const char *col = psprintf("%s.%s", alias, quote_identifier(k->col->name));
			const char *v = psprintf("CAST($%d AS %s)", params[j], k->col->sqltype);
			bool desc = k->desc != reverse, nf = k->nulls_first != reverse;

			if (j < i)
				appendStringInfo(&b, " AND %s IS NOT DISTINCT FROM %s", col, v);
			else if (nf)
				/* NULLs first: after NULL come the non-NULLs; after v, greater values */
				appendStringInfo(&b, " AND CASE WHEN %s IS NULL THEN %s IS NOT NULL ELSE coalesce(%s %s %s, false) END",
								 v, col, col, desc ? "<" : ">", v);
			else
				/* NULLs last: nothing after NULL; after v, greater values then NULLs */
				appendStringInfo(&b, " AND CASE WHEN %s IS NULL THEN false ELSE (%s IS NULL OR %s %s %s) END",
								 v, col, col, desc ? "<" : ">", v);
		}
		appendStringInfoChar(&b, ')');
	}
	appendStringInfoChar(&b, ')');
	return b.data;
}

static void
connection_expr(GCompile *c, GTable *t, const GSel *sel, GRel *rel, const char *parent_alias)
{
	StringInfo b = &c->sql;
	GqlValue *first = gql_arg(c, sel, "first"), *last = gql_arg(c, sel, "last");
	GqlValue *before = gql_arg(c, sel, "before"), *after = gql_arg(c, sel, "after");
	GqlValue *filter = gql_arg(c, sel, "filter");
	GqlValue *order_by = t->order ? gql_arg(c, sel, "orderBy") : NULL;
	bool backward = !is_null(last);
	char *limit_text;
	long limit;
	int plimit;
	List *keys = order_keys(c, t, order_by);
	char *a = gql_new_alias(c);
	char *cursor_cond = NULL;
	char *filter_sql;
	char *join_sql = "true";
	List *sels = gql_collect(c, t->conn, sel->sets);
	ListCell *lc;
	bool firstkey = true;
	int save_len;
	double save_scale;

	if (!is_null(first) && !is_null(last))
		gql_error(sel->first->loc, "\"first\" and \"last\" cannot be used together.");
	limit_text = gql_scalar_text(c, backward ? last : first, c->schema->t_int, backward ? "\"last\"" : "\"first\"");
	limit = limit_text ? atol(limit_text) : Min(30, bv_graphql_max_rows);
	if (limit < 0)
		gql_error(sel->first->loc, "\"%s\" must not be negative.", backward ? "last" : "first");
	if (limit > bv_graphql_max_rows)
		gql_error(sel->first->loc, "\"%s\" must be at most %d (bv_graphql.max_rows).", backward ? "last" : "first", bv_graphql_max_rows);
	plimit = gql_param(c, psprintf("%ld", limit));
	/* only edges build records; totalCount and pageInfo are one value each */
	save_scale = c->scale;
	{
		bool has_edges = false;

		foreach (lc, sels)
			has_edges |= ((GSel *) lfirst(lc))->field && ((GSel *) lfirst(lc))->field->kind == FK_CONN_EDGES;
		c->scale = gql_count_records(c, has_edges ? (double) limit : 1, sel->first->loc);
	}

	/* the pieces of WHERE, built aside and reused */
	save_len = b->len;
	gql_where_filter(c, t, a, filter);
	filter_sql = pstrdup(b->data + save_len);
	b->len = save_len;
	b->data[save_len] = '\0';
	if (rel)
	{
		StringInfoData j;

		initStringInfo(&j);
		for (int k = 0; k < rel->n; k++)
			appendStringInfo(&j, "%s%s.%s = %s.%s", k ? " AND " : "", a,
							 quote_identifier(t->cols[rel->to_cols[k]].name), parent_alias,
							 quote_identifier(rel->from->cols[rel->from_cols[k]].name));
		join_sql = j.data;
	}
	{
		char *cur = gql_scalar_text(c, backward ? before : after, c->schema->t_cursor, "the cursor");

		if (cur)
			cursor_cond = cursor_condition(c, keys, a, cur, backward, (backward ? before : after)->loc);
	}

	check_pairs(sels, sel->first->loc);
	appendStringInfoString(b, "(SELECT json_build_object(");
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);

		append_key(c, &firstkey, s->key);
		if (s->field == NULL)
		{
			gql_append_literal(b, t->conn->name);
			continue;
		}
		switch (s->field->kind)
		{
			case FK_CONN_TOTAL:
				appendStringInfo(b, "(SELECT count(*)::int FROM %s %s WHERE %s AND %s)", t->qname, a, join_sql, filter_sql);
				break;
			case FK_CONN_EDGES:
			{
				List *esels = gql_collect(c, t->edge, s->sets);
				ListCell *ec;
				bool efirst = true;

				check_pairs(esels, s->first->loc);
				appendStringInfoString(b, "coalesce(json_agg(json_build_object(");
				foreach (ec, esels)
				{
					GSel *e = lfirst(ec);

					append_key(c, &efirst, e->key);
					if (e->field == NULL)
						gql_append_literal(b, t->edge->name);
					else if (e->field->kind == FK_EDGE_CURSOR)
						append_cursor_expr(b, keys, a);
					else
						gql_object_expr(c, t, a, e->sets);
				}
				/* the page's rows arrive in order (see the FROM below): no sort here */
				appendStringInfoString(b, ")), '[]'::json)");
				break;
			}
			case FK_CONN_PAGE_INFO:
			{
				List *psels = gql_collect(c, c->schema->page_info, s->sets);
				ListCell *pc;
				bool pfirst = true;

				appendStringInfoString(b, "json_build_object(");
				foreach (pc, psels)
				{
					GSel *p = lfirst(pc);
					GFieldKind k = p->field ? p->field->kind : FK_INTROSPECTION;

					append_key(c, &pfirst, p->key);
					if (p->field == NULL)
						gql_append_literal(b, "PageInfo");
					else if ((k == FK_PAGE_HAS_NEXT && !backward) || (k == FK_PAGE_HAS_PREV && backward))
					{
						/* more than a page: the page's conditions, one row further */
						appendStringInfo(b, "((SELECT count(*) FROM (SELECT 1 FROM %s %s WHERE %s AND %s AND %s LIMIT CAST($%d AS int) + 1) __more) > CAST($%d AS int))",
										 t->qname, a, join_sql, filter_sql, cursor_cond ? cursor_cond : "true", plimit, plimit);
					}
					else if (k == FK_PAGE_HAS_NEXT || k == FK_PAGE_HAS_PREV)
					{
						/* rows on the other side of the cursor: exists when a cursor was given */
						if (cursor_cond == NULL)
							appendStringInfoString(b, "false");
						else
							/* the same conditions; the subquery's alias shadows the page's */
							appendStringInfo(b, "EXISTS (SELECT 1 FROM %s %s WHERE %s AND %s AND NOT coalesce(%s, false))",
											 t->qname, a, join_sql, filter_sql, cursor_cond);
					}
					else
					{
						/* rows are in forward order here, backward pages too */
						bool start = k == FK_PAGE_START;

						appendStringInfoString(b, "(array_agg(");
						append_cursor_expr(b, keys, a);
						appendStringInfoString(b, " ORDER BY ");
						append_order(b, keys, a, !start);
						appendStringInfoString(b, "))[1]");
					}
				}
				appendStringInfoChar(b, ')');
				break;
			}
			default:
				elog(ERROR, "bv_graphql: unexpected field kind %d on a connection", s->field->kind);
		}
	}
	appendStringInfoString(b, ") FROM (SELECT ");
	if (backward)
		appendStringInfoString(b, "* FROM (SELECT ");
	{
		bool fc = true;

		for (int i = 0; i < t->ncols; i++)
			if (t->cols[i].gtype)
			{
				appendStringInfo(b, "%s%s.%s", fc ? "" : ", ", a, quote_identifier(t->cols[i].name));
				fc = false;
			}
		if (fc)
			appendStringInfoString(b, "1");
	}
	appendStringInfo(b, " FROM %s %s WHERE %s AND %s", t->qname, a, join_sql, filter_sql);
	if (cursor_cond)
		appendStringInfo(b, " AND %s", cursor_cond);
	appendStringInfoString(b, " ORDER BY ");
	append_order(b, keys, a, backward);
	appendStringInfo(b, " LIMIT CAST($%d AS int)", plimit);
	/* a backward page is read in reverse, then put in order */
	if (backward)
	{
		appendStringInfo(b, ") %s ORDER BY ", a);
		append_order(b, keys, a, false);
	}
	/* GROUP BY (): one row even when the page is empty and nothing aggregates */
	appendStringInfo(b, ") %s GROUP BY ())", a);
	c->scale = save_scale;
}

/* ---------- the root ---------- */

static void
node_expr(GCompile *c, const GSel *sel)
{
	char *id = gql_scalar_text(c, gql_arg(c, sel, "nodeId"), c->schema->t_id, "\"nodeId\"");
	List *keys;
	GTable *t = decode_node_id(c, id, sel->first->loc, &keys);
	char *a = gql_new_alias(c);

	appendStringInfoString(&c->sql, "(SELECT ");
	gql_object_expr(c, t, a, sel->sets);
	appendStringInfo(&c->sql, " FROM %s %s WHERE ", t->qname, a);
	append_key_match(c, t, a, keys);
	appendStringInfoChar(&c->sql, ')');
}

void
gql_compile_query(GCompile *c, List *sels, GType *parent)
{
	ListCell *lc;
	bool first = true;

	check_pairs(sels, noloc);
	appendStringInfoString(&c->sql, "SELECT json_build_object(");
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);

		append_key(c, &first, s->key);
		if (s->field == NULL)
			gql_append_literal(&c->sql, parent->name);
		else if (s->field->kind == FK_INTROSPECTION)
		{
			StringInfoData j;

			initStringInfo(&j);
			gql_introspect(c, s, &j);
			appendStringInfoString(&c->sql, "CAST(");
			gql_append_literal(&c->sql, j.data);
			appendStringInfoString(&c->sql, " AS json)");
		}
		else if (s->field->kind == FK_QUERY_COLLECTION)
			connection_expr(c, s->field->table, s, NULL, NULL);
		else if (s->field->kind == FK_QUERY_NODE)
			node_expr(c, s);
		else if (s->field->kind == FK_FUNCTION)
			gql_function_expr(c, s);
		else
			elog(ERROR, "bv_graphql: unexpected root field kind %d", s->field->kind);
	}
	appendStringInfoString(&c->sql, ")::text");
}
