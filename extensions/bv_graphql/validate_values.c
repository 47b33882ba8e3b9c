/*-------------------------------------------------------------------------
 *
 * validate_values.c
 *	  Values in a GraphQL document, section 5.6 of the October 2021
 *	  specification: a literal in a position of a given input type must fit
 *	  it (scalars of the right form, enum values that exist, input objects
 *	  with known, unique fields and their required ones, null only where
 *	  the type allows it, a single value standing for a list of one), and
 *	  every variable met on the way is recorded with the position's type
 *	  for 5.8.5 (validate.c checks those against the variables' types).
 *
 * Scalar forms mirror gql_scalar_text() in compile.c, which coerces the
 * values of variables at run time.  Messages are graphql-js's, the
 * offending value printed back as GraphQL cut to about 80 bytes (never
 * inside a character).  Memory: palloc in the request's context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "bv_graphql.h"

static void
print_value(StringInfo b, GqlValue *val)
{
	if (b->len > 80)
		return;
	switch (val->kind)
	{
		case GQL_V_VARIABLE:
			appendStringInfo(b, "$%s", val->str);
			break;
		case GQL_V_INT:
		case GQL_V_FLOAT:
		case GQL_V_ENUM:
			appendStringInfoString(b, val->str);
			break;
		case GQL_V_STRING:
			appendStringInfoChar(b, '"');
			for (const char *p = val->str; *p && b->len < 80; p++)
			{
				if (*p == '"' || *p == '\\')
					appendStringInfoChar(b, '\\');
				if ((unsigned char) *p < 0x20)
					appendStringInfo(b, "\\u%04x", (unsigned char) *p);
				else
					appendStringInfoChar(b, *p);
			}
			appendStringInfoChar(b, '"');
			break;
		case GQL_V_BOOLEAN:
			appendStringInfoString(b, val->boolean ? "true" : "false");
			break;
		case GQL_V_NULL:
			appendStringInfoString(b, "null");
			break;
		case GQL_V_LIST:
			appendStringInfoChar(b, '[');
			for (int i = 0; i < val->n; i++)
			{
				if (i)
					appendStringInfoString(b, ", ");
				print_value(b, val->items[i]);
			}
			appendStringInfoChar(b, ']');
			break;
		case GQL_V_OBJECT:
			appendStringInfoChar(b, '{');
			for (int i = 0; i < val->n; i++)
			{
				appendStringInfo(b, "%s%s: ", i ? ", " : "", val->names[i]);
				print_value(b, val->items[i]);
			}
			appendStringInfoChar(b, '}');
			break;
	}
}

/* A value as GraphQL text for a message: at most about 80 bytes of it. */
static char *
value_str(GqlValue *val)
{
	StringInfoData b;

	initStringInfo(&b);
	print_value(&b, val);
	if (b.len > 80)
	{
		int n = 80;

		while (n > 0 && (b.data[n] & 0xC0) == 0x80)
			n--; /* do not cut a character */
		b.data[n] = '\0';
		return psprintf("%s...", b.data);
	}
	return b.data;
}

static bool
digits(const char *s)
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

/* Does a literal (not a variable, not null) fit a scalar type?  Mirrors gql_scalar_text(). */
static bool
scalar_ok(GType *t, GqlValue *val, bool *range)
{
	*range = false;
	switch (t->scalar)
	{
		case GS_INT:
			if (val->kind == GQL_V_INT)
			{
				char *end;
				long n;

				errno = 0;
				n = strtol(val->str, &end, 10);
				*range = !(errno == 0 && *end == '\0' && n >= PG_INT32_MIN && n <= PG_INT32_MAX);
				return !*range;
			}
			return false;
		case GS_FLOAT:
			return val->kind == GQL_V_INT || val->kind == GQL_V_FLOAT;
		case GS_BIGINT:
			return val->kind == GQL_V_INT || (val->kind == GQL_V_STRING && digits(val->str));
		case GS_BIGFLOAT:
			return val->kind == GQL_V_INT || val->kind == GQL_V_FLOAT || val->kind == GQL_V_STRING;
		case GS_ID:
			return val->kind == GQL_V_INT || val->kind == GQL_V_STRING;
		case GS_BOOLEAN:
			return val->kind == GQL_V_BOOLEAN;
		case GS_JSON:
			return true;
		default:
			return val->kind == GQL_V_STRING;
	}
}

/* A literal that does not fit a scalar: the specified scalars' own words, as graphql-js. */
static void
scalar_error(GValidator *v, GType *t, GqlValue *val, bool range)
{
	const char *text = value_str(val);

	if (range)
		GQL_VERR1(v, val->loc, "Int cannot represent non 32-bit signed integer value: %s", text);
	else if (t->scalar == GS_INT)
		GQL_VERR1(v, val->loc, "Int cannot represent non-integer value: %s", text);
	else if (t->scalar == GS_FLOAT)
		GQL_VERR1(v, val->loc, "Float cannot represent non numeric value: %s", text);
	else if (t->scalar == GS_STRING && strcmp(t->name, "String") == 0)
		GQL_VERR1(v, val->loc, "String cannot represent a non string value: %s", text);
	else if (t->scalar == GS_BOOLEAN)
		GQL_VERR1(v, val->loc, "Boolean cannot represent a non boolean value: %s", text);
	else if (t->scalar == GS_ID)
		GQL_VERR1(v, val->loc, "ID cannot represent a non-string and non-integer value: %s", text);
	else
		GQL_VERR1(v, val->loc, "Expected value of type \"%s\", found %s.", t->name, text);
}

/* Record the variables used in a value whose type is unknown. */
static void
walk_untyped(GValidator *v, GqlValue *val)
{
	if (val->kind == GQL_V_VARIABLE)
	{
		VarUse *u = palloc0(sizeof(VarUse));

		u->name = val->str;
		u->loc = val->loc;
		v->cur->uses = lappend(v->cur->uses, u);
	}
	else if (val->kind == GQL_V_LIST || val->kind == GQL_V_OBJECT)
		for (int i = 0; i < val->n; i++)
			walk_untyped(v, val->items[i]);
}

/* 5.6: a literal value in a position of type t (NULL: unknown); variables are recorded. */
void
gql_v_check_value(GValidator *v, GqlValue *val, GType *t, bool loc_default)
{
	check_stack_depth();
	if (val->kind == GQL_V_VARIABLE)
	{
		VarUse *u = palloc0(sizeof(VarUse));

		u->name = val->str;
		u->loc = val->loc;
		u->type = t;
		u->loc_default = loc_default;
		v->cur->uses = lappend(v->cur->uses, u);
		return;
	}
	if (t == NULL)
	{
		walk_untyped(v, val);
		return;
	}
	if (t->kind == GK_NON_NULL)
	{
		if (val->kind == GQL_V_NULL)
		{
			GQL_VERR1(v, val->loc, "Expected value of type \"%s\", found null.", gql_v_type_str(t));
			return;
		}
		gql_v_check_value(v, val, t->of, false);
		return;
	}
	if (val->kind == GQL_V_NULL)
		return;
	if (t->kind == GK_LIST)
	{
		if (val->kind == GQL_V_LIST)
			for (int i = 0; i < val->n; i++)
				gql_v_check_value(v, val->items[i], t->of, false);
		else
			gql_v_check_value(v, val, t->of, false); /* a single value stands for a list of one */
		return;
	}
	if (t->kind == GK_INPUT)
	{
		if (val->kind != GQL_V_OBJECT)
		{
			GQL_VERR1(v, val->loc, "Expected value of type \"%s\", found %s.", t->name, value_str(val));
			walk_untyped(v, val);
			return;
		}
		for (int i = 0; i < val->n; i++)
		{
			GInput *in = gql_input(t->ninputs, t->inputs, val->names[i]);
			GqlLoc nloc = val->name_locs ? val->name_locs[i] : val->loc;
			bool dup = false;

			for (int k = 0; k < i && !dup; k++)
				if (strcmp(val->names[k], val->names[i]) == 0)
				{
					GqlLoc kloc = val->name_locs ? val->name_locs[k] : val->loc;

					GQL_VERR2(v, kloc, nloc, "There can be only one input field named \"%.64s\".", val->names[i]);
					dup = true;
				}
			if (in == NULL)
				GQL_VERR1(v, nloc, "Field \"%.64s\" is not defined by type \"%s\".", val->names[i], t->name);
			gql_v_check_value(v, val->items[i], in ? in->type : NULL, in && in->default_value);
		}
		for (int k = 0; k < t->ninputs; k++)
		{
			GInput *in = &t->inputs[k];
			bool given = false;

			if (in->type->kind != GK_NON_NULL || in->default_value)
				continue;
			for (int i = 0; i < val->n && !given; i++)
				given = strcmp(val->names[i], in->name) == 0;
			if (!given)
				GQL_VERR1(v, val->loc, "Field \"%s.%s\" of required type \"%s\" was not provided.", t->name, in->name,
						  gql_v_type_str(in->type));
		}
		return;
	}
	if (t->kind == GK_ENUM)
	{
		if (val->kind == GQL_V_ENUM)
		{
			for (int i = 0; i < t->nvalues; i++)
				if (strcmp(t->values[i].name, val->str) == 0)
					return;
			GQL_VERR1(v, val->loc, "Value \"%.64s\" does not exist in \"%s\" enum.", val->str, t->name);
		}
		else
		{
			GQL_VERR1(v, val->loc, "Enum \"%s\" cannot represent non-enum value: %s.", t->name, value_str(val));
			walk_untyped(v, val);
		}
		return;
	}
	if (t->kind == GK_SCALAR)
	{
		bool range;

		if (!scalar_ok(t, val, &range))
			scalar_error(v, t, val, range);
		walk_untyped(v, val); /* JSON literals may hold variables */
	}
}
