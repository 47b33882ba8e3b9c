/*-------------------------------------------------------------------------
 *
 * types.c
 *	  The GraphQL schema built from the catalog model of schema.c.
 *
 * Naming (see docs/bv_graphql.md): a table or view "order_lines" is the
 * object type OrderLines, its columns lowerCamelCase fields; the query
 * field orderLinesCollection returns an OrderLinesConnection (Relay:
 * edges { cursor node }, pageInfo, totalCount) and takes first / last /
 * before / after, filter: OrderLinesFilter and orderBy: [OrderLinesOrderBy!].
 * A foreign key gives a to-one field on the referencing type (named after
 * the key column without "_id") and a to-many connection field on the
 * referenced one (<table>Collection).  Mutations are
 * insertInto<T>Collection, update<T>Collection and deleteFrom<T>Collection.
 * Name clashes never break the schema; they are resolved in catalog order
 * (tables by schema order then name in "C" collation, columns by
 * position, functions by name and argument types), and the renamed
 * type or field says so in its description.  A type name already taken
 * (by a built-in type, a type derived from an earlier table such as
 * <T>Connection or <T>InsertInput, an enum or another schema's table)
 * gets the schema name in front, then a number (2, 3...).  Every derived
 * name of a table is reserved when its table is named, so a later table or
 * enum cannot take it.  A field name already taken in its type (a_b and
 * aB, a column node_id, a column named like a filter combinator and / or /
 * not) falls back to the column's SQL name when that is a free GraphQL
 * name, else the name followed by _2, _3...; functions clashing with
 * collections or mutations likewise.
 *
 * Scalars: Int (int2/int4), BigInt (int8, as a string in responses, as
 * pg_graphql does), Float, BigFloat (numeric, a string), String, Boolean,
 * ID, UUID, Date, Time, Datetime, JSON (json/jsonb as JSON values),
 * Cursor, Opaque (any other type, output through to_json).  PostgreSQL
 * enums whose labels are GraphQL names become enum types.
 *
 * Every type lives in the schema's memory context (the caller switched to
 * it); types are found by name with a linear search (a few hundred).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "utils/catcache.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "bv_graphql.h"

/* ---------- names ---------- */

static char *
camel(const char *s, bool upper_first)
{
	StringInfoData b;
	bool up = upper_first;

	initStringInfo(&b);
	for (const char *p = s; *p; p++)
	{
		char ch = *p;

		if (ch == '_' || !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')))
		{
			up = b.len > 0;
			continue;
		}
		if (b.len == 0 && ch >= '0' && ch <= '9')
			appendStringInfoChar(&b, '_');
		if (up && ch >= 'a' && ch <= 'z')
			ch = ch - 'a' + 'A';
		else if (b.len == 0 && !upper_first && ch >= 'A' && ch <= 'Z')
			ch = ch - 'A' + 'a';
		appendStringInfoChar(&b, ch);
		up = false;
	}
	if (b.len == 0)
		appendStringInfoChar(&b, '_');
	return b.data;
}

char *
gql_upper_camel(const char *s)
{
	return camel(s, true);
}

char *
gql_lower_camel(const char *s)
{
	return camel(s, false);
}

static char *
lower_first(const char *s)
{
	char *r = pstrdup(s);

	if (r[0] >= 'A' && r[0] <= 'Z')
		r[0] = r[0] - 'A' + 'a';
	return r;
}

/* ---------- type constructors ---------- */

/* Is a type name taken, by a type or by a name kept for one built later? */
static bool
name_taken(GSchema *s, const char *name)
{
	ListCell *lc;

	if (gql_type_by_name(s, name))
		return true;
	foreach (lc, s->reserved)
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	return false;
}

static void
reserve(GSchema *s, const char *name)
{
	s->reserved = lappend(s->reserved, pstrdup(name));
}

/* A description saying that a name was changed because it clashed. */
static const char *
renamed(const char *description, const char *wanted, const char *what)
{
	return psprintf("%s%s(The GraphQL name \"%s\" is taken by another %s: renamed.)", description ? description : "",
					description ? " " : "", wanted, what);
}

/*
 * Is name taken on object type t, or, for a column's field, on its filter
 * input type (filter, which also holds the combinators and / or / not)?
 */
static bool
field_taken(GType *t, const GType *filter, const char *name)
{
	if (gql_field(t, name))
		return true;
	if (filter == NULL)
		return false;
	return gql_input(filter->ninputs, filter->inputs, name) || strcmp(name, "and") == 0 || strcmp(name, "or") == 0 ||
		   strcmp(name, "not") == 0;
}

/* A field name free on t: base, else alt (when a usable Name), else base_2, base_3... */
static char *
free_field_name(GType *t, const GType *filter, const char *base, const char *alt, bool base_claimed)
{
	if (!base_claimed && !field_taken(t, filter, base))
		return pstrdup(base);
	if (alt && gql_is_name(alt) && strncmp(alt, "__", 2) != 0 && !field_taken(t, filter, alt))
		return pstrdup(alt);
	for (int n = 2;; n++)
	{
		char *name = psprintf("%s_%d", base, n);

		if (!field_taken(t, filter, name))
			return name;
	}
}

GType *
gql_type_by_name(GSchema *s, const char *name)
{
	ListCell *lc;

	foreach (lc, s->types)
	{
		GType *t = lfirst(lc);

		if (strcmp(t->name, name) == 0)
			return t;
	}
	return NULL;
}

static GType *
new_type(GSchema *s, GKind kind, const char *name, const char *description)
{
	GType *t = palloc0(sizeof(GType));

	t->kind = kind;
	t->name = pstrdup(name);
	t->description = description;
	s->types = lappend(s->types, t);
	return t;
}

GType *
gql_list(GSchema *s, GType *t)
{
	if (t->list_of == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(s->cxt);

		t->list_of = palloc0(sizeof(GType));
		t->list_of->kind = GK_LIST;
		t->list_of->of = t;
		MemoryContextSwitchTo(old);
	}
	return t->list_of;
}

GType *
gql_nn(GSchema *s, GType *t)
{
	if (t->kind == GK_NON_NULL)
		return t;
	if (t->nn_of == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(s->cxt);

		t->nn_of = palloc0(sizeof(GType));
		t->nn_of->kind = GK_NON_NULL;
		t->nn_of->of = t;
		MemoryContextSwitchTo(old);
	}
	return t->nn_of;
}

GType *
gql_named(GType *t)
{
	while (t->kind == GK_LIST || t->kind == GK_NON_NULL)
		t = t->of;
	return t;
}

GField *
gql_field(GType *t, const char *name)
{
	for (int i = 0; i < t->nfields; i++)
		if (strcmp(t->fields[i].name, name) == 0)
			return &t->fields[i];
	return NULL;
}

GInput *
gql_input(int n, GInput *inputs, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(inputs[i].name, name) == 0)
			return &inputs[i];
	return NULL;
}

/* Append a field; NULL (and nothing added) when the name is taken. */
static GField *
add_field(GType *t, const char *name, GType *type, GFieldKind kind, const char *description)
{
	if (gql_field(t, name))
		return NULL;
	if (t->nfields % 8 == 0)
		t->fields = t->fields ? repalloc(t->fields, sizeof(GField) * (t->nfields + 8))
							  : palloc(sizeof(GField) * 8);
	memset(&t->fields[t->nfields], 0, sizeof(GField));
	t->fields[t->nfields].name = pstrdup(name);
	t->fields[t->nfields].type = type;
	t->fields[t->nfields].kind = kind;
	t->fields[t->nfields].description = description;
	return &t->fields[t->nfields++];
}

static GInput *
add_input(int *n, GInput **inputs, const char *name, GType *type, const char *def, const char *description)
{
	if (gql_input(*n, *inputs, name))
		return NULL;
	if (*n % 8 == 0)
		*inputs = *inputs ? repalloc(*inputs, sizeof(GInput) * (*n + 8)) : palloc(sizeof(GInput) * 8);
	memset(&(*inputs)[*n], 0, sizeof(GInput));
	(*inputs)[*n].name = pstrdup(name);
	(*inputs)[*n].type = type;
	(*inputs)[*n].default_value = def;
	(*inputs)[*n].description = description;
	return &(*inputs)[(*n)++];
}

static GInput *
add_arg(GField *f, const char *name, GType *type, const char *def, const char *description)
{
	return add_input(&f->nargs, &f->args, name, type, def, description);
}

static GInput *
add_input_field(GType *t, const char *name, GType *type, const char *description)
{
	return add_input(&t->ninputs, &t->inputs, name, type, NULL, description);
}

static void
add_enum_value(GType *t, const char *name, const char *description)
{
	if (t->nvalues % 8 == 0)
		t->values = t->values ? repalloc(t->values, sizeof(GEnumValue) * (t->nvalues + 8))
							  : palloc(sizeof(GEnumValue) * 8);
	t->values[t->nvalues].name = pstrdup(name);
	t->values[t->nvalues].description = description;
	t->nvalues++;
}

static void
add_iface(GType *t, GType *iface)
{
	t->ifaces = t->ifaces ? repalloc(t->ifaces, sizeof(GType *) * (t->nifaces + 1)) : palloc(sizeof(GType *));
	t->ifaces[t->nifaces++] = iface;
	iface->possible = iface->possible ? repalloc(iface->possible, sizeof(GType *) * (iface->npossible + 1))
									  : palloc(sizeof(GType *));
	iface->possible[iface->npossible++] = t;
}

static GType *
scalar(GSchema *s, const char *name, GScalar kind, const char *description)
{
	GType *t = new_type(s, GK_SCALAR, name, description);

	t->scalar = kind;
	return t;
}

/* ---------- scalars and enums of PostgreSQL types ---------- */

static int
enum_cmp(const void *a, const void *b)
{
	Form_pg_enum ea = (Form_pg_enum) GETSTRUCT(*(const HeapTuple *) a);
	Form_pg_enum eb = (Form_pg_enum) GETSTRUCT(*(const HeapTuple *) b);

	return ea->enumsortorder < eb->enumsortorder ? -1 : ea->enumsortorder > eb->enumsortorder;
}

/* The enum type for a PostgreSQL enum, NULL when its labels are not Names. */
static GType *
enum_type(GSchema *s, Oid typid)
{
	CatCList *list = SearchSysCacheList1(ENUMTYPOIDNAME, ObjectIdGetDatum(typid));
	HeapTuple *tups = palloc(sizeof(HeapTuple) * Max(list->n_members, 1));
	HeapTuple tp = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	char *name;
	char *schema;
	GType *t = NULL;
	bool ok = list->n_members > 0;

	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for type %u", typid);
	name = gql_upper_camel(NameStr(((Form_pg_type) GETSTRUCT(tp))->typname));
	schema = get_namespace_name(((Form_pg_type) GETSTRUCT(tp))->typnamespace);
	ReleaseSysCache(tp);
	for (int i = 0; i < list->n_members; i++)
	{
		const char *label;

		tups[i] = &list->members[i]->tuple;
		label = NameStr(((Form_pg_enum) GETSTRUCT(tups[i]))->enumlabel);

		/* the specification forbids true, false, null and names starting with __ as enum values */
		if (!gql_is_name(label) || strcmp(label, "true") == 0 || strcmp(label, "false") == 0 ||
			strcmp(label, "null") == 0 || strncmp(label, "__", 2) == 0)
			ok = false;
	}
	if (ok)
	{
		const char *wanted = name;

		qsort(tups, list->n_members, sizeof(HeapTuple), enum_cmp);
		if (name_taken(s, name) || name_taken(s, psprintf("%sFilter", name)))
		{
			char *prefixed = psprintf("%s%s", gql_upper_camel(schema ? schema : "x"), name);

			name = prefixed;
			for (int n = 2; name_taken(s, name) || name_taken(s, psprintf("%sFilter", name)); n++)
				name = psprintf("%s%d", prefixed, n);
		}
		{
			t = new_type(s, GK_ENUM, name, wanted != name ? renamed(NULL, wanted, "type") : NULL);
			reserve(s, psprintf("%sFilter", name));
			t->scalar = GS_STRING;
			for (int i = 0; i < list->n_members; i++)
				add_enum_value(t, NameStr(((Form_pg_enum) GETSTRUCT(tups[i]))->enumlabel), NULL);
		}
	}
	ReleaseSysCacheList(list);
	return t;
}

typedef struct EnumMap
{
	Oid typid;
	GType *type;
} EnumMap;

static List *enum_map;

/* The GraphQL named type of a PostgreSQL type. */
static GType *
type_of(GSchema *s, Oid typid)
{
	Oid base = getBaseType(typid);
	const char *name;

	switch (base)
	{
		case INT2OID:
		case INT4OID:
			name = "Int";
			break;
		case INT8OID:
			name = "BigInt";
			break;
		case FLOAT4OID:
		case FLOAT8OID:
			name = "Float";
			break;
		case NUMERICOID:
			name = "BigFloat";
			break;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case CHAROID:
			name = "String";
			break;
		case BOOLOID:
			name = "Boolean";
			break;
		case UUIDOID:
			name = "UUID";
			break;
		case DATEOID:
			name = "Date";
			break;
		case TIMEOID:
		case TIMETZOID:
			name = "Time";
			break;
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			name = "Datetime";
			break;
		case JSONOID:
		case JSONBOID:
			name = "JSON";
			break;
		default:
			if (get_typtype(base) == TYPTYPE_ENUM)
			{
				ListCell *lc;
				EnumMap *m;

				foreach (lc, enum_map)
				{
					m = lfirst(lc);
					if (m->typid == base)
						return m->type ? m->type : gql_type_by_name(s, "String");
				}
				m = palloc(sizeof(EnumMap));
				m->typid = base;
				m->type = enum_type(s, base);
				enum_map = lappend(enum_map, m);
				return m->type ? m->type : gql_type_by_name(s, "String");
			}
			name = "Opaque";
			break;
	}
	return gql_type_by_name(s, name);
}

/* The filter input type of a named type, created on first use. */
static GType *
filter_of(GSchema *s, GType *t)
{
	char *name;
	GType *f;
	bool ordered, text, in;

	if (t->kind == GK_SCALAR && (t->scalar == GS_JSON || t->scalar == GS_OPAQUE || t->scalar == GS_CURSOR))
		return NULL;
	name = psprintf("%sFilter", t->name);
	if ((f = gql_type_by_name(s, name)) != NULL)
		return f->kind == GK_INPUT ? f : NULL;
	ordered = t->kind == GK_SCALAR && t->scalar != GS_BOOLEAN && t->scalar != GS_UUID && t->scalar != GS_ID;
	text = t->kind == GK_SCALAR && t->scalar == GS_STRING;
	in = !(t->kind == GK_SCALAR && t->scalar == GS_BOOLEAN);
	f = new_type(s, GK_INPUT, name, psprintf("Boolean expression comparing fields of type \"%s\".", t->name));
	add_input_field(f, "eq", t, NULL);
	add_input_field(f, "neq", t, NULL);
	if (ordered)
	{
		add_input_field(f, "lt", t, NULL);
		add_input_field(f, "lte", t, NULL);
		add_input_field(f, "gt", t, NULL);
		add_input_field(f, "gte", t, NULL);
	}
	if (in)
		add_input_field(f, "in", gql_list(s, gql_nn(s, t)), NULL);
	add_input_field(f, "is", s->filter_is, NULL);
	if (text)
	{
		add_input_field(f, "like", t, "SQL LIKE pattern.");
		add_input_field(f, "ilike", t, "SQL ILIKE pattern (case-insensitive LIKE).");
	}
	return f;
}

/* ---------- built-in types ---------- */

static void
build_builtins(GSchema *s)
{
	GType *t;

	s->t_int = scalar(s, "Int", GS_INT, "The `Int` scalar type represents non-fractional signed whole numeric values between -(2^31) and 2^31 - 1.");
	scalar(s, "Float", GS_FLOAT, "The `Float` scalar type represents signed double-precision fractional values.");
	s->t_string = scalar(s, "String", GS_STRING, "The `String` scalar type represents textual data as UTF-8 character sequences.");
	s->t_boolean = scalar(s, "Boolean", GS_BOOLEAN, "The `Boolean` scalar type represents `true` or `false`.");
	s->t_id = scalar(s, "ID", GS_ID, "The `ID` scalar type represents a unique identifier; here an opaque string naming a record.");
	scalar(s, "BigInt", GS_BIGINT, "A 64-bit integer, in responses as a string; inputs take an Int or a string of digits.");
	scalar(s, "BigFloat", GS_BIGFLOAT, "An arbitrary-precision decimal (PostgreSQL numeric), in responses as a string.");
	scalar(s, "Date", GS_DATE, "A date, ISO 8601 (YYYY-MM-DD).");
	scalar(s, "Time", GS_TIME, "A time of day, ISO 8601.");
	scalar(s, "Datetime", GS_DATETIME, "A timestamp, ISO 8601.");
	scalar(s, "UUID", GS_UUID, "A universally unique identifier.");
	s->t_json = scalar(s, "JSON", GS_JSON, "A JSON value (PostgreSQL json or jsonb).");
	s->t_cursor = scalar(s, "Cursor", GS_CURSOR, "An opaque pagination cursor.");
	scalar(s, "Opaque", GS_OPAQUE, "A value of a PostgreSQL type with no GraphQL equivalent, as PostgreSQL's to_json renders it.");

	/* the filter types of scalars are made on first use: keep their names */
	{
		static const char *const filtered[] = {"Int", "Float", "String", "Boolean", "ID", "BigInt",
											   "BigFloat", "Date", "Time", "Datetime", "UUID"};

		for (int i = 0; i < lengthof(filtered); i++)
			reserve(s, psprintf("%sFilter", filtered[i]));
	}

	s->filter_is = t = new_type(s, GK_ENUM, "FilterIs", "Tests for SQL NULL.");
	add_enum_value(t, "NULL", NULL);
	add_enum_value(t, "NOT_NULL", NULL);
	s->order_dir = t = new_type(s, GK_ENUM, "OrderByDirection", "Sort direction and where NULLs go.");
	add_enum_value(t, "AscNullsFirst", NULL);
	add_enum_value(t, "AscNullsLast", NULL);
	add_enum_value(t, "DescNullsFirst", NULL);
	add_enum_value(t, "DescNullsLast", NULL);

	s->page_info = t = new_type(s, GK_OBJECT, "PageInfo", "Relay pagination information.");
	add_field(t, "hasNextPage", gql_nn(s, s->t_boolean), FK_PAGE_HAS_NEXT, NULL);
	add_field(t, "hasPreviousPage", gql_nn(s, s->t_boolean), FK_PAGE_HAS_PREV, NULL);
	add_field(t, "startCursor", s->t_string, FK_PAGE_START, NULL);
	add_field(t, "endCursor", s->t_string, FK_PAGE_END, NULL);

	s->node = t = new_type(s, GK_INTERFACE, "Node", "A record with a primary key, found again by node(nodeId:).");
	add_field(t, "nodeId", gql_nn(s, s->t_id), FK_NODE_ID, "Globally unique identifier of the record.");
}

/* The introspection types of the specification (section 4.2). */
static void
build_introspection(GSchema *s)
{
	GType *str = s->t_string, *nnstr = gql_nn(s, s->t_string), *nnbool = gql_nn(s, s->t_boolean);
	GType *schema = new_type(s, GK_OBJECT, "__Schema", "A GraphQL service's type system: its types, root operation types and directives.");
	GType *type = new_type(s, GK_OBJECT, "__Type", "Any type of the schema, or a list / non-null wrapper of one.");
	GType *field = new_type(s, GK_OBJECT, "__Field", "A field of an object or interface type.");
	GType *ivalue = new_type(s, GK_OBJECT, "__InputValue", "An argument or input object field.");
	GType *evalue = new_type(s, GK_OBJECT, "__EnumValue", "A value of an enum type.");
	GType *dir = new_type(s, GK_OBJECT, "__Directive", "A directive the service supports.");
	GType *kind = new_type(s, GK_ENUM, "__TypeKind", "The kinds of types.");
	GType *loc = new_type(s, GK_ENUM, "__DirectiveLocation", "Where a directive may be used.");
	static const char *kinds[] = {"SCALAR", "OBJECT", "INTERFACE", "UNION", "ENUM", "INPUT_OBJECT", "LIST", "NON_NULL"};
	static const char *locs[] = {"QUERY", "MUTATION", "SUBSCRIPTION", "FIELD", "FRAGMENT_DEFINITION", "FRAGMENT_SPREAD",
								 "INLINE_FRAGMENT", "VARIABLE_DEFINITION", "SCHEMA", "SCALAR", "OBJECT", "FIELD_DEFINITION",
								 "ARGUMENT_DEFINITION", "INTERFACE", "UNION", "ENUM", "ENUM_VALUE", "INPUT_OBJECT",
								 "INPUT_FIELD_DEFINITION"};
	GField *f;

	for (int i = 0; i < lengthof(kinds); i++)
		add_enum_value(kind, kinds[i], NULL);
	for (int i = 0; i < lengthof(locs); i++)
		add_enum_value(loc, locs[i], NULL);

	add_field(schema, "description", str, FK_INTROSPECTION, NULL);
	add_field(schema, "types", gql_nn(s, gql_list(s, gql_nn(s, type))), FK_INTROSPECTION, NULL);
	add_field(schema, "queryType", gql_nn(s, type), FK_INTROSPECTION, NULL);
	add_field(schema, "mutationType", type, FK_INTROSPECTION, NULL);
	add_field(schema, "subscriptionType", type, FK_INTROSPECTION, NULL);
	add_field(schema, "directives", gql_nn(s, gql_list(s, gql_nn(s, dir))), FK_INTROSPECTION, NULL);

	add_field(type, "kind", gql_nn(s, kind), FK_INTROSPECTION, NULL);
	add_field(type, "name", str, FK_INTROSPECTION, NULL);
	add_field(type, "description", str, FK_INTROSPECTION, NULL);
	add_field(type, "specifiedByURL", str, FK_INTROSPECTION, NULL);
	f = add_field(type, "fields", gql_list(s, gql_nn(s, field)), FK_INTROSPECTION, NULL);
	add_arg(f, "includeDeprecated", s->t_boolean, "false", NULL);
	add_field(type, "interfaces", gql_list(s, gql_nn(s, type)), FK_INTROSPECTION, NULL);
	add_field(type, "possibleTypes", gql_list(s, gql_nn(s, type)), FK_INTROSPECTION, NULL);
	f = add_field(type, "enumValues", gql_list(s, gql_nn(s, evalue)), FK_INTROSPECTION, NULL);
	add_arg(f, "includeDeprecated", s->t_boolean, "false", NULL);
	f = add_field(type, "inputFields", gql_list(s, gql_nn(s, ivalue)), FK_INTROSPECTION, NULL);
	add_arg(f, "includeDeprecated", s->t_boolean, "false", NULL);
	add_field(type, "ofType", type, FK_INTROSPECTION, NULL);

	add_field(field, "name", nnstr, FK_INTROSPECTION, NULL);
	add_field(field, "description", str, FK_INTROSPECTION, NULL);
	f = add_field(field, "args", gql_nn(s, gql_list(s, gql_nn(s, ivalue))), FK_INTROSPECTION, NULL);
	add_arg(f, "includeDeprecated", s->t_boolean, "false", NULL);
	add_field(field, "type", gql_nn(s, type), FK_INTROSPECTION, NULL);
	add_field(field, "isDeprecated", nnbool, FK_INTROSPECTION, NULL);
	add_field(field, "deprecationReason", str, FK_INTROSPECTION, NULL);

	add_field(ivalue, "name", nnstr, FK_INTROSPECTION, NULL);
	add_field(ivalue, "description", str, FK_INTROSPECTION, NULL);
	add_field(ivalue, "type", gql_nn(s, type), FK_INTROSPECTION, NULL);
	add_field(ivalue, "defaultValue", str, FK_INTROSPECTION, NULL);
	add_field(ivalue, "isDeprecated", nnbool, FK_INTROSPECTION, NULL);
	add_field(ivalue, "deprecationReason", str, FK_INTROSPECTION, NULL);

	add_field(evalue, "name", nnstr, FK_INTROSPECTION, NULL);
	add_field(evalue, "description", str, FK_INTROSPECTION, NULL);
	add_field(evalue, "isDeprecated", nnbool, FK_INTROSPECTION, NULL);
	add_field(evalue, "deprecationReason", str, FK_INTROSPECTION, NULL);

	add_field(dir, "name", nnstr, FK_INTROSPECTION, NULL);
	add_field(dir, "description", str, FK_INTROSPECTION, NULL);
	add_field(dir, "locations", gql_nn(s, gql_list(s, gql_nn(s, loc))), FK_INTROSPECTION, NULL);
	f = add_field(dir, "args", gql_nn(s, gql_list(s, gql_nn(s, ivalue))), FK_INTROSPECTION, NULL);
	add_arg(f, "includeDeprecated", s->t_boolean, "false", NULL);
	add_field(dir, "isRepeatable", nnbool, FK_INTROSPECTION, NULL);
}

/* ---------- per-table types ---------- */

static const char *const suffixes[] = {"", "Connection", "Edge", "Filter", "OrderBy", "InsertInput",
									   "UpdateInput", "InsertResponse", "UpdateResponse", "DeleteResponse"};

static bool
names_free(GSchema *s, const char *base)
{
	for (int i = 0; i < lengthof(suffixes); i++)
		if (name_taken(s, psprintf("%s%s", base, suffixes[i])))
			return false;
	return true;
}

static void
add_connection_args(GSchema *s, GField *f, GTable *t)
{
	add_arg(f, "first", s->t_int, NULL, "Query the first n records of the collection.");
	add_arg(f, "last", s->t_int, NULL, "Query the last n records of the collection.");
	add_arg(f, "before", s->t_cursor, NULL, "Query values that come before this cursor.");
	add_arg(f, "after", s->t_cursor, NULL, "Query values that come after this cursor.");
	add_arg(f, "filter", t->filter, NULL, "Filters to apply to the results.");
	if (t->order)
		add_arg(f, "orderBy", gql_list(s, gql_nn(s, t->order)), NULL, "Sort order to apply to the results.");
}

static char *
rel_cols_suffix(GRel *r)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "By");
	for (int k = 0; k < r->n; k++)
		appendStringInfoString(&b, gql_upper_camel(r->to_many ? r->to->cols[r->to_cols[k]].name
															  : r->from->cols[r->from_cols[k]].name));
	return b.data;
}

/*
 * Does another column of t, whose SQL name is exactly this column's
 * GraphQL name, claim the name?  A column "aB" keeps "aB" even when a_b
 * comes first; a_b then falls back to its own SQL name.
 */
static bool
claimed_by_other(GTable *t, GColumn *c)
{
	if (strcmp(c->gname, c->name) == 0)
		return false;
	for (int i = 0; i < t->ncols; i++)
		if (&t->cols[i] != c && strcmp(t->cols[i].name, c->gname) == 0 && strcmp(t->cols[i].gname, t->cols[i].name) == 0)
			return true;
	return false;
}

static void
build_table_types(GSchema *s)
{
	ListCell *lc;
	List *kept = NIL;

	/* names first, so that relationships can point at any type */
	foreach (lc, s->tables)
	{
		GTable *t = lfirst(lc);
		const char *base = t->gname;
		const char *description = t->description;

		if (!names_free(s, base))
		{
			const char *prefixed = psprintf("%s%s", gql_upper_camel(t->schema), t->gname);

			base = prefixed;
			for (int n = 2; !names_free(s, base); n++)
				base = psprintf("%s%d", prefixed, n);
			description = renamed(description, t->gname, "type");
		}
		for (int i = 0; i < lengthof(suffixes); i++)
			reserve(s, psprintf("%s%s", base, suffixes[i]));
		t->gname = pstrdup(base);
		t->type = new_type(s, GK_OBJECT, base, description);
		t->type->table = t;
		t->conn = new_type(s, GK_OBJECT, psprintf("%sConnection", base), NULL);
		t->edge = new_type(s, GK_OBJECT, psprintf("%sEdge", base), NULL);
		t->filter = new_type(s, GK_INPUT, psprintf("%sFilter", base),
							 psprintf("Boolean expression over %s; all fields given must hold.", base));
		kept = lappend(kept, t);
	}
	s->tables = kept;

	foreach (lc, s->tables)
	{
		GTable *t = lfirst(lc);
		GType *order = NULL;

		if (t->npk > 0)
		{
			add_field(t->type, "nodeId", gql_nn(s, s->t_id), FK_NODE_ID, "Globally unique identifier of the record.");
			add_iface(t->type, s->node);
			add_input_field(t->filter, "nodeId", filter_of(s, s->t_id), NULL);
		}
		for (int i = 0; i < t->ncols; i++)
		{
			GColumn *c = &t->cols[i];
			GField *f;

			c->gtype = type_of(s, c->typid);
			if (field_taken(t->type, t->filter, c->gname) || claimed_by_other(t, c))
			{
				/* a_b and aB, node_id, a column "and"...: a name of its own, said in the description */
				const char *wanted = c->gname;

				c->gname = free_field_name(t->type, t->filter, c->gname, c->name, claimed_by_other(t, c));
				c->description = renamed(c->description, wanted, "field");
			}
			f = add_field(t->type, c->gname, c->notnull ? gql_nn(s, c->gtype) : c->gtype, FK_COLUMN, c->description);
			f->column = c;
			f->table = t;
			c->filter = filter_of(s, c->gtype);
			c->orderable = c->filter != NULL;
			if (c->filter)
				add_input_field(t->filter, c->gname, c->filter, NULL)->column = c;
			if (c->orderable)
			{
				if (order == NULL)
					order = new_type(s, GK_INPUT, psprintf("%sOrderBy", t->gname), NULL);
				add_input_field(order, c->gname, s->order_dir, NULL)->column = c;
			}
		}
		t->order = order;
		add_input_field(t->filter, "and", gql_list(s, gql_nn(s, t->filter)), "All of these must hold.");
		add_input_field(t->filter, "or", gql_list(s, gql_nn(s, t->filter)), "At least one of these must hold.");
		add_input_field(t->filter, "not", t->filter, "This must not hold.");

		add_field(t->edge, "cursor", gql_nn(s, s->t_string), FK_EDGE_CURSOR, NULL);
		add_field(t->edge, "node", gql_nn(s, t->type), FK_EDGE_NODE, NULL);
		add_field(t->conn, "edges", gql_nn(s, gql_list(s, gql_nn(s, t->edge))), FK_CONN_EDGES, NULL);
		add_field(t->conn, "pageInfo", gql_nn(s, s->page_info), FK_CONN_PAGE_INFO, NULL);
		add_field(t->conn, "totalCount", gql_nn(s, s->t_int), FK_CONN_TOTAL, "Number of records matching the filter.");
	}

	/* relationships, once every type has its columns */
	foreach (lc, s->tables)
	{
		GTable *t = lfirst(lc);
		ListCell *rc;

		foreach (rc, t->rels)
		{
			GRel *r = lfirst(rc);
			GField *f;
			char *name;
			bool visible = r->to->type != NULL;

			for (int k = 0; k < r->n && visible; k++)
				visible = r->from->cols[r->from_cols[k]].gtype && r->to->cols[r->to_cols[k]].gtype;
			if (!visible || t->type == NULL)
				continue;
			if (r->to_many)
				name = psprintf("%sCollection", lower_first(r->to->gname));
			else
			{
				const char *col = t->cols[r->from_cols[0]].name;
				size_t len = strlen(col);

				if (r->n == 1 && len > 3 && strcmp(col + len - 3, "_id") == 0)
					name = gql_lower_camel(pnstrdup(col, len - 3));
				else
					name = lower_first(r->to->gname);
			}
			if (gql_field(t->type, name))
				name = free_field_name(t->type, NULL, psprintf("%s%s", name, rel_cols_suffix(r)), NULL, false);
			f = add_field(t->type, name, r->to_many ? gql_nn(s, r->to->conn) : r->to->type,
						  r->to_many ? FK_TO_MANY : FK_TO_ONE, NULL);
			f->rel = r;
			f->table = r->to;
			r->gname = f->name;
			if (r->to_many)
				add_connection_args(s, f, r->to);
		}
	}
}

/* ---------- root types ---------- */

static void
build_mutation_types(GSchema *s, GTable *t, GType *mutation)
{
	GField *f;
	GType *resp;

	if (t->can_insert)
	{
		GType *in = NULL;

		for (int i = 0; i < t->ncols; i++)
			if (t->cols[i].gtype && t->cols[i].can_insert)
			{
				if (in == NULL)
					in = new_type(s, GK_INPUT, psprintf("%sInsertInput", t->gname), NULL);
				add_input_field(in, t->cols[i].gname, t->cols[i].gtype, t->cols[i].description)->column = &t->cols[i];
			}
		if (in)
		{
			t->insert_input = in;
			resp = t->insert_resp = new_type(s, GK_OBJECT, psprintf("%sInsertResponse", t->gname), NULL);
			add_field(resp, "affectedCount", gql_nn(s, s->t_int), FK_RESP_COUNT, "Count of the records inserted.");
			add_field(resp, "records", gql_nn(s, gql_list(s, gql_nn(s, t->type))), FK_RESP_RECORDS, "The records inserted.");
			f = add_field(mutation, psprintf("insertInto%sCollection", t->gname), resp, FK_MUT_INSERT,
						  psprintf("Adds one or more records to %s.", t->gname));
			if (f)
			{
				f->table = t;
				add_arg(f, "objects", gql_nn(s, gql_list(s, gql_nn(s, in))), NULL, NULL);
			}
		}
	}
	if (t->can_update)
	{
		GType *in = NULL;

		for (int i = 0; i < t->ncols; i++)
			if (t->cols[i].gtype && t->cols[i].can_update)
			{
				if (in == NULL)
					in = new_type(s, GK_INPUT, psprintf("%sUpdateInput", t->gname), NULL);
				add_input_field(in, t->cols[i].gname, t->cols[i].gtype, t->cols[i].description)->column = &t->cols[i];
			}
		if (in)
		{
			t->update_input = in;
			resp = t->update_resp = new_type(s, GK_OBJECT, psprintf("%sUpdateResponse", t->gname), NULL);
			add_field(resp, "affectedCount", gql_nn(s, s->t_int), FK_RESP_COUNT, "Count of the records updated.");
			add_field(resp, "records", gql_nn(s, gql_list(s, gql_nn(s, t->type))), FK_RESP_RECORDS, "The records updated.");
			f = add_field(mutation, psprintf("update%sCollection", t->gname), gql_nn(s, resp), FK_MUT_UPDATE,
						  psprintf("Updates the records of %s matching the filter.", t->gname));
			if (f)
			{
				f->table = t;
				add_arg(f, "set", gql_nn(s, in), NULL, "Fields to set.");
				add_arg(f, "filter", t->filter, NULL, "Which records; all when absent.");
				add_arg(f, "atMost", gql_nn(s, s->t_int), "1", "Fail, changing nothing, when more records would be updated.");
			}
		}
	}
	if (t->can_delete)
	{
		resp = t->delete_resp = new_type(s, GK_OBJECT, psprintf("%sDeleteResponse", t->gname), NULL);
		add_field(resp, "affectedCount", gql_nn(s, s->t_int), FK_RESP_COUNT, "Count of the records deleted.");
		add_field(resp, "records", gql_nn(s, gql_list(s, gql_nn(s, t->type))), FK_RESP_RECORDS, "The records deleted.");
		f = add_field(mutation, psprintf("deleteFrom%sCollection", t->gname), gql_nn(s, resp), FK_MUT_DELETE,
					  psprintf("Deletes the records of %s matching the filter.", t->gname));
		if (f)
		{
			f->table = t;
			add_arg(f, "filter", t->filter, NULL, "Which records; all when absent.");
			add_arg(f, "atMost", gql_nn(s, s->t_int), "1", "Fail, deleting nothing, when more records would be deleted.");
		}
	}
}

static void
build_function_fields(GSchema *s, GType *query, GType *mutation)
{
	ListCell *lc;

	foreach (lc, s->funcs)
	{
		GFunc *fn = lfirst(lc);
		GType *ret;
		GField *f;

		if (fn->ret_table)
		{
			if (fn->ret_table->type == NULL)
				continue;
			ret = fn->retset ? gql_nn(s, gql_list(s, gql_nn(s, fn->ret_table->type))) : fn->ret_table->type;
		}
		else
		{
			fn->ret_scalar = type_of(s, (Oid) (uintptr_t) fn->ret_scalar);
			ret = fn->retset ? gql_list(s, fn->ret_scalar) : fn->ret_scalar;
		}
		for (int k = 0; k < fn->nargs; k++)
			fn->arggtypes[k] = type_of(s, (Oid) (uintptr_t) fn->arggtypes[k]);
		if (gql_field(fn->is_mutation ? mutation : query, fn->gname))
		{
			/* a collection, a mutation, node, or an overload of the same name came first */
			const char *wanted = fn->gname;

			fn->gname = free_field_name(fn->is_mutation ? mutation : query, NULL, fn->gname, NULL, false);
			fn->description = renamed(fn->description, wanted, "field");
		}
		f = add_field(fn->is_mutation ? mutation : query, fn->gname, ret, FK_FUNCTION, fn->description);
		f->func = fn;
		f->table = fn->ret_table;
		for (int k = 0; k < fn->nargs; k++)
			add_arg(f, fn->argnames[k], fn->arg_has_default[k] ? fn->arggtypes[k] : gql_nn(s, fn->arggtypes[k]), NULL, NULL);
	}
}

void
gql_types_build(GSchema *s)
{
	GType *query, *mutation;
	ListCell *lc;
	GField *f;

	enum_map = NIL;
	build_builtins(s);
	build_introspection(s);
	query = s->query = new_type(s, GK_OBJECT, "Query", "The query root.");
	mutation = new_type(s, GK_OBJECT, "Mutation", "The mutation root.");
	build_table_types(s);
	foreach (lc, s->tables)
	{
		GTable *t = lfirst(lc);

		f = add_field(query, psprintf("%sCollection", lower_first(t->gname)), t->conn, FK_QUERY_COLLECTION,
					  t->description ? t->description : psprintf("Records of %s.", t->qname));
		if (f)
		{
			f->table = t;
			add_connection_args(s, f, t);
		}
		build_mutation_types(s, t, mutation);
	}
	f = add_field(query, "node", s->node, FK_QUERY_NODE, "Finds a record by its nodeId.");
	add_arg(f, "nodeId", gql_nn(s, s->t_id), NULL, "The record's nodeId.");
	build_function_fields(s, query, mutation);
	s->f_schema = palloc0(sizeof(GField));
	s->f_schema->name = "__schema";
	s->f_schema->type = gql_nn(s, gql_type_by_name(s, "__Schema"));
	s->f_schema->kind = FK_INTROSPECTION;
	s->f_type = palloc0(sizeof(GField));
	s->f_type->name = "__type";
	s->f_type->type = gql_type_by_name(s, "__Type");
	s->f_type->kind = FK_INTROSPECTION;
	add_arg(s->f_type, "name", gql_nn(s, s->t_string), NULL, NULL);
	if (mutation->nfields > 0)
		s->mutation = mutation;
	else
		s->types = list_delete_ptr(s->types, mutation);
	enum_map = NIL;
}
