/*-------------------------------------------------------------------------
 *
 * introspect.c
 *	  __schema, __type and __typename answered from the GraphQL model.
 *
 * Introspection never reaches SQL: the answer is JSON text built here from
 * the GSchema of the calling role (so a role sees only the types and
 * fields it may use) and, when a query mixes it with data fields, embedded
 * in the statement as a literal by compile.c.  Selections are collected
 * once per field of the request (GSel.sub), not once per type listed, so a
 * full getIntrospectionQuery() costs one pass over the model.
 *
 * Also here: gql_json_value(), GraphQL input values as JSON (for JSON
 * arguments and columns).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/json.h"

#include "bv_graphql.h"

typedef struct GDirective
{
	const char *name;
	const char *description;
	const char *locations[4];
	const char *arg;
	const char *arg_type; /* "Boolean!", "String!" or "String" */
	const char *arg_default;
} GDirective;

static const GDirective directives[] = {
	{"include", "Directs the executor to include this field or fragment only when the `if` argument is true.", {"FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT", NULL}, "if", "Boolean!", NULL},
	{"skip", "Directs the executor to skip this field or fragment when the `if` argument is true.", {"FIELD", "FRAGMENT_SPREAD", "INLINE_FRAGMENT", NULL}, "if", "Boolean!", NULL},
	{"deprecated", "Marks an element of a GraphQL schema as no longer supported.", {"FIELD_DEFINITION", "ARGUMENT_DEFINITION", "INPUT_FIELD_DEFINITION", "ENUM_VALUE"}, "reason", "String", "\"No longer supported\""},
	{"specifiedBy", "Exposes a URL that specifies the behaviour of this scalar.", {"SCALAR", NULL, NULL, NULL}, "url", "String!", NULL},
};

typedef enum IKind
{
	IK_SCHEMA,
	IK_TYPE,
	IK_FIELD,
	IK_INPUT,
	IK_ENUM_VALUE,
	IK_DIRECTIVE
} IKind;

static void emit(GCompile *c, IKind kind, const void *obj, GSel *sel, StringInfo out);

static void
str_or_null(StringInfo out, const char *s)
{
	if (s)
		escape_json(out, s);
	else
		appendStringInfoString(out, "null");
}

static GType *
itype(GCompile *c, IKind kind)
{
	static const char *const names[] = {"__Schema", "__Type", "__Field", "__InputValue", "__EnumValue", "__Directive"};

	return gql_type_by_name(c->schema, names[kind]);
}

static List *
sub_sels(GCompile *c, GSel *sel, IKind kind)
{
	GType *t = itype(c, kind);

	if (sel->sub_type != t)
	{
		sel->sub = gql_collect(c, t, sel->sets);
		sel->sub_type = t;
	}
	return sel->sub;
}

/* A list of n objects, obj(i) each. */
#define EMIT_LIST(c, kind, n, objexpr, sel, out) \
	do                                           \
	{                                            \
		appendStringInfoChar(out, '[');          \
		for (int i_ = 0; i_ < (n); i_++)         \
		{                                        \
			if (i_)                              \
				appendStringInfoChar(out, ',');  \
			emit(c, kind, (objexpr), sel, out);  \
		}                                        \
		appendStringInfoChar(out, ']');          \
	} while (0)

static const char *
kind_text(GKind k)
{
	static const char *const names[] = {"SCALAR", "OBJECT", "INTERFACE", "UNION", "ENUM", "INPUT_OBJECT", "LIST", "NON_NULL"};

	return names[k];
}

static void
emit_type_field(GCompile *c, const GType *t, GSel *s, const char *f, StringInfo out)
{
	if (strcmp(f, "kind") == 0)
		escape_json(out, kind_text(t->kind));
	else if (strcmp(f, "name") == 0)
		str_or_null(out, t->name);
	else if (strcmp(f, "description") == 0)
		str_or_null(out, t->description);
	else if (strcmp(f, "specifiedByURL") == 0)
		appendStringInfoString(out, "null");
	else if (strcmp(f, "fields") == 0)
	{
		if (t->kind == GK_OBJECT || t->kind == GK_INTERFACE)
			EMIT_LIST(c, IK_FIELD, t->nfields, &t->fields[i_], s, out);
		else
			appendStringInfoString(out, "null");
	}
	else if (strcmp(f, "interfaces") == 0)
	{
		if (t->kind == GK_OBJECT || t->kind == GK_INTERFACE)
			EMIT_LIST(c, IK_TYPE, t->nifaces, t->ifaces[i_], s, out);
		else
			appendStringInfoString(out, "null");
	}
	else if (strcmp(f, "possibleTypes") == 0)
	{
		if (t->kind == GK_INTERFACE || t->kind == GK_UNION)
			EMIT_LIST(c, IK_TYPE, t->npossible, t->possible[i_], s, out);
		else
			appendStringInfoString(out, "null");
	}
	else if (strcmp(f, "enumValues") == 0)
	{
		if (t->kind == GK_ENUM)
			EMIT_LIST(c, IK_ENUM_VALUE, t->nvalues, &t->values[i_], s, out);
		else
			appendStringInfoString(out, "null");
	}
	else if (strcmp(f, "inputFields") == 0)
	{
		if (t->kind == GK_INPUT)
			EMIT_LIST(c, IK_INPUT, t->ninputs, &t->inputs[i_], s, out);
		else
			appendStringInfoString(out, "null");
	}
	else if (strcmp(f, "ofType") == 0)
	{
		if (t->of)
			emit(c, IK_TYPE, t->of, s, out);
		else
			appendStringInfoString(out, "null");
	}
}

static void
emit_directive_field(GCompile *c, const GDirective *d, GSel *s, const char *f, StringInfo out)
{
	if (strcmp(f, "name") == 0)
		escape_json(out, d->name);
	else if (strcmp(f, "description") == 0)
		escape_json(out, d->description);
	else if (strcmp(f, "isRepeatable") == 0)
		appendStringInfoString(out, "false");
	else if (strcmp(f, "locations") == 0)
	{
		appendStringInfoChar(out, '[');
		for (int i = 0; i < 4 && d->locations[i]; i++)
		{
			if (i)
				appendStringInfoChar(out, ',');
			escape_json(out, d->locations[i]);
		}
		appendStringInfoChar(out, ']');
	}
	else if (strcmp(f, "args") == 0)
	{
		GInput in;
		bool nn = d->arg_type[strlen(d->arg_type) - 1] == '!';
		GType *t = gql_type_by_name(c->schema, nn ? pnstrdup(d->arg_type, strlen(d->arg_type) - 1) : d->arg_type);

		memset(&in, 0, sizeof(in));
		in.name = d->arg;
		in.type = nn ? gql_nn(c->schema, t) : t;
		in.default_value = d->arg_default;
		appendStringInfoChar(out, '[');
		emit(c, IK_INPUT, &in, s, out);
		appendStringInfoChar(out, ']');
	}
}

static void
emit(GCompile *c, IKind kind, const void *obj, GSel *sel, StringInfo out)
{
	List *sels = sub_sels(c, sel, kind);
	ListCell *lc;

	check_stack_depth();
	if (++c->depth > bv_graphql_max_depth)
		gql_error(sel->first->loc, "the introspection query nests deeper than %d levels (bv_graphql.max_depth)",
				  bv_graphql_max_depth);
	if (out->len > 64 * 1024 * 1024)
		gql_error(sel->first->loc, "the introspection answer is too large");
	appendStringInfoChar(out, '{');
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);
		const char *f = s->field ? s->field->name : "__typename";

		if (foreach_current_index(lc))
			appendStringInfoChar(out, ',');
		escape_json(out, s->key);
		appendStringInfoChar(out, ':');
		if (s->field == NULL)
		{
			escape_json(out, itype(c, kind)->name);
			continue;
		}
		switch (kind)
		{
			case IK_SCHEMA:
			{
				GSchema *gs = c->schema;

				if (strcmp(f, "description") == 0 || strcmp(f, "subscriptionType") == 0)
					appendStringInfoString(out, "null");
				else if (strcmp(f, "types") == 0)
				{
					ListCell *tc;

					appendStringInfoChar(out, '[');
					foreach (tc, gs->types)
					{
						if (foreach_current_index(tc))
							appendStringInfoChar(out, ',');
						emit(c, IK_TYPE, lfirst(tc), s, out);
					}
					appendStringInfoChar(out, ']');
				}
				else if (strcmp(f, "queryType") == 0)
					emit(c, IK_TYPE, gs->query, s, out);
				else if (strcmp(f, "mutationType") == 0)
				{
					if (gs->mutation)
						emit(c, IK_TYPE, gs->mutation, s, out);
					else
						appendStringInfoString(out, "null");
				}
				else if (strcmp(f, "directives") == 0)
					EMIT_LIST(c, IK_DIRECTIVE, (int) lengthof(directives), &directives[i_], s, out);
				break;
			}
			case IK_TYPE:
				emit_type_field(c, obj, s, f, out);
				break;
			case IK_FIELD:
			{
				const GField *fd = obj;

				if (strcmp(f, "name") == 0)
					escape_json(out, fd->name);
				else if (strcmp(f, "description") == 0)
					str_or_null(out, fd->description);
				else if (strcmp(f, "args") == 0)
					EMIT_LIST(c, IK_INPUT, fd->nargs, &fd->args[i_], s, out);
				else if (strcmp(f, "type") == 0)
					emit(c, IK_TYPE, fd->type, s, out);
				else if (strcmp(f, "isDeprecated") == 0)
					appendStringInfoString(out, "false");
				else
					appendStringInfoString(out, "null");
				break;
			}
			case IK_INPUT:
			{
				const GInput *in = obj;

				if (strcmp(f, "name") == 0)
					escape_json(out, in->name);
				else if (strcmp(f, "description") == 0)
					str_or_null(out, in->description);
				else if (strcmp(f, "type") == 0)
					emit(c, IK_TYPE, in->type, s, out);
				else if (strcmp(f, "defaultValue") == 0)
					str_or_null(out, in->default_value);
				else if (strcmp(f, "isDeprecated") == 0)
					appendStringInfoString(out, "false");
				else
					appendStringInfoString(out, "null");
				break;
			}
			case IK_ENUM_VALUE:
			{
				const GEnumValue *ev = obj;

				if (strcmp(f, "name") == 0)
					escape_json(out, ev->name);
				else if (strcmp(f, "description") == 0)
					str_or_null(out, ev->description);
				else if (strcmp(f, "isDeprecated") == 0)
					appendStringInfoString(out, "false");
				else
					appendStringInfoString(out, "null");
				break;
			}
			case IK_DIRECTIVE:
				emit_directive_field(c, obj, s, f, out);
				break;
		}
	}
	appendStringInfoChar(out, '}');
	c->depth--;
}

/* The JSON answer of a __schema or __type root field. */
void
gql_introspect(GCompile *c, const GSel *sel, StringInfo out)
{
	GSel *s = (GSel *) sel;

	if (sel->field == c->schema->f_schema)
		emit(c, IK_SCHEMA, c->schema, s, out);
	else
	{
		GqlValue *name = gql_arg(c, sel, "name");
		char *n = gql_scalar_text(c, name, c->schema->t_string, "\"name\"");
		GType *t = gql_type_by_name(c->schema, n);

		if (t)
			emit(c, IK_TYPE, t, s, out);
		else
			appendStringInfoString(out, "null");
	}
}

void
gql_json_value(GCompile *c, GqlValue *v, StringInfo out)
{
	v = gql_resolve_var(c, v);
	if (v == NULL)
	{
		appendStringInfoString(out, "null");
		return;
	}
	switch (v->kind)
	{
		case GQL_V_INT:
		case GQL_V_FLOAT:
			appendStringInfoString(out, v->str);
			break;
		case GQL_V_STRING:
		case GQL_V_ENUM:
			escape_json(out, v->str);
			break;
		case GQL_V_BOOLEAN:
			appendStringInfoString(out, v->boolean ? "true" : "false");
			break;
		case GQL_V_NULL:
		case GQL_V_VARIABLE:
			appendStringInfoString(out, "null");
			break;
		case GQL_V_LIST:
			appendStringInfoChar(out, '[');
			for (int i = 0; i < v->n; i++)
			{
				if (i)
					appendStringInfoChar(out, ',');
				gql_json_value(c, v->items[i], out);
			}
			appendStringInfoChar(out, ']');
			break;
		case GQL_V_OBJECT:
			appendStringInfoChar(out, '{');
			for (int i = 0; i < v->n; i++)
			{
				if (i)
					appendStringInfoChar(out, ',');
				escape_json(out, v->names[i]);
				appendStringInfoChar(out, ':');
				gql_json_value(c, v->items[i], out);
			}
			appendStringInfoChar(out, '}');
			break;
	}
}
