/*-------------------------------------------------------------------------
 *
 * resolve.c
 *	  graphql.resolve(query, variables, "operationName", extensions): one
 *	  GraphQL request, from text to a response object, inside the caller's
 *	  transaction and role.
 *
 * Steps: the size limit; parsing (gql_parse.c, with the depth, token and
 * alias limits); choosing the operation; coercing the variables against
 * their definitions; the schema of the calling role (schema.c); compiling
 * (compile.c, mutate.c); executing.  Bad documents, validation and
 * coercion problems are GraphQL errors ({"errors": [{message, locations}]})
 * with no data, as the specification says for request errors.  A query is
 * one statement; a mutation is one statement per root field, run in order,
 * each in its own subtransaction: a field that fails is null with an error
 * (the others keep their effects), as the specification's field errors.
 * Database errors are mapped to messages without internals (constraint,
 * table and column names stay in the server); the SQLSTATE goes into
 * extensions.code.  Query cancellation and resource errors are re-thrown.
 *
 * Nothing here runs with more privileges than the caller: the function is
 * SECURITY INVOKER and every statement runs through SPI as the current
 * role, so grants and row-level security apply.
 *
 * Plans: statements are prepared once per backend and kept (SPI_keepplan)
 * in a hash table keyed by the statement text, which depends only on the
 * shape of the operation (values are parameters).  At most PLAN_CACHE_MAX
 * plans of PLAN_CACHE_TEXT_MAX bytes of text in all (a plan's memory grows
 * with its text, and clients choose the shapes); when full the table is
 * emptied.  PostgreSQL's plan cache
 * re-plans kept plans after DDL and for a different role under RLS.
 *
 * Memory: each request works in a memory context that is a child of the
 * function's context, deleted before returning.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/md5.h"
#include "mb/pg_wchar.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "catalog/pg_description.h"

#include "bv_graphql.h"

PG_MODULE_MAGIC;

char *bv_graphql_schemas = NULL;
int bv_graphql_max_size = 100000;
int bv_graphql_max_depth = 16;
int bv_graphql_max_aliases = 200;
int bv_graphql_max_tokens = 20000;
int bv_graphql_max_fields = 5000;
int bv_graphql_max_rows = 1000;
int bv_graphql_max_records = 100000;
int bv_graphql_max_mutations = 20;

#define PLAN_CACHE_MAX      256
#define PLAN_KEY_MAX        32768        /* longer statements are not kept */
#define PLAN_CACHE_TEXT_MAX (256 * 1024) /* all kept statements' text: a plan's memory grows with it */
#define ERROR_MSG_MAX       200

void _PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("bv_graphql.schemas",
							   "Schemas whose tables, views and functions GraphQL exposes.",
							   "A comma-separated list; earlier schemas win name clashes.",
							   &bv_graphql_schemas, "commerce, api", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_size", "Largest GraphQL document accepted, in bytes.", NULL,
							&bv_graphql_max_size, 100000, 1, 10000000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_depth", "Deepest nesting of a GraphQL document or operation.", NULL,
							&bv_graphql_max_depth, 16, 1, 100, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_aliases", "Most aliased fields in a GraphQL document.", NULL,
							&bv_graphql_max_aliases, 200, 0, 100000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_tokens", "Most lexical tokens in a GraphQL document.", NULL,
							&bv_graphql_max_tokens, 20000, 1, 10000000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_fields", "Most fields an operation selects once fragments are expanded.", NULL,
							&bv_graphql_max_fields, 5000, 1, 1000000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_rows", "Largest page (first / last) and insert (objects).", NULL,
							&bv_graphql_max_rows, 1000, 1, 1000000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_records",
							"Most records an operation may read in the worst case: nested pages multiply.", NULL,
							&bv_graphql_max_records, 100000, 1, INT_MAX, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bv_graphql.max_mutations", "Most mutation root fields in one operation.",
							"Each runs as a statement of its own; the request rate limit counts the request once.",
							&bv_graphql_max_mutations, 20, 1, 100000, PGC_SUSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("bv_graphql");
	gql_schema_init();
}

/* ---------- errors ---------- */

typedef struct GErr
{
	char *message;
	GqlLoc loc;
	int nlocs; /* more locations (validation), when locs is set */
	GqlLoc *locs;
	const char *path; /* response key of a root field, or NULL */
	const char *code; /* SQLSTATE or NULL */
	char *hint;
} GErr;

static void
append_error(StringInfo out, const GErr *e)
{
	appendStringInfoString(out, "{\"message\":");
	escape_json(out, e->message);
	if (e->locs && e->nlocs > 0)
	{
		appendStringInfoString(out, ",\"locations\":[");
		for (int i = 0; i < e->nlocs; i++)
			appendStringInfo(out, "%s{\"line\":%d,\"column\":%d}", i ? "," : "", e->locs[i].line, e->locs[i].column);
		appendStringInfoChar(out, ']');
	}
	else if (e->loc.line > 0)
		appendStringInfo(out, ",\"locations\":[{\"line\":%d,\"column\":%d}]", e->loc.line, e->loc.column);
	if (e->path)
	{
		appendStringInfoString(out, ",\"path\":[");
		escape_json(out, e->path);
		appendStringInfoChar(out, ']');
	}
	if (e->code)
	{
		appendStringInfoString(out, ",\"extensions\":{\"code\":");
		escape_json(out, e->code);
		if (e->hint)
		{
			appendStringInfoString(out, ",\"hint\":");
			escape_json(out, e->hint);
		}
		appendStringInfoChar(out, '}');
	}
	appendStringInfoChar(out, '}');
}

/*
 * The response object as JSON text, keys in the specification's order:
 * "errors" first when there are any (section 7.1 suggests it), then
 * "data"; data's keys are in selection order, as the statements and the
 * introspection answers build them.
 */
static char *
response(const char *data, List *errors)
{
	StringInfoData out;
	ListCell *lc;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	if (errors)
	{
		appendStringInfoString(&out, "\"errors\":[");
		foreach (lc, errors)
		{
			if (foreach_current_index(lc))
				appendStringInfoChar(&out, ',');
			append_error(&out, lfirst(lc));
		}
		appendStringInfoChar(&out, ']');
	}
	if (data)
		appendStringInfo(&out, "%s\"data\":%s", errors ? "," : "", data);
	appendStringInfoChar(&out, '}');
	return out.data;
}

/*
 * A request error (no data): extensions.code says which kind, with the
 * names GraphQL servers commonly use (GRAPHQL_PARSE_FAILED,
 * GRAPHQL_VALIDATION_FAILED, BAD_REQUEST); database errors carry their
 * SQLSTATE instead.
 */
static List *
one_error(const char *message, GqlLoc loc, const char *code)
{
	GErr *e = palloc0(sizeof(GErr));

	e->message = pstrdup(message);
	e->loc = loc;
	e->code = pstrdup(code);
	return list_make1(e);
}

static char *
clip(const char *s)
{
	if (s == NULL)
		return NULL;
	if (strlen(s) <= ERROR_MSG_MAX)
		return pstrdup(s);
	return psprintf("%s...", pnstrdup(s, pg_mbcliplen(s, strlen(s), ERROR_MSG_MAX)));
}

/* A database error as a GraphQL error: no constraint, table or column names. */
static GErr *
map_sql_error(ErrorData *ed, const char *path)
{
	GErr *e = palloc0(sizeof(GErr));
	char *code = pstrdup(unpack_sql_state(ed->sqlerrcode));

	e->path = path;
	e->code = code;
	switch (ed->sqlerrcode)
	{
		case ERRCODE_UNIQUE_VIOLATION:
			e->message = pstrdup("a record with the same unique value already exists");
			e->hint = pstrdup("Change the value, or update the existing record instead.");
			break;
		case ERRCODE_FOREIGN_KEY_VIOLATION:
			e->message = pstrdup("the record refers to a record that does not exist, or is still referred to");
			e->hint = pstrdup("Check the referenced ids, or remove the referring records first.");
			break;
		case ERRCODE_NOT_NULL_VIOLATION:
			e->message = pstrdup("a required value is missing");
			e->hint = pstrdup("Give every field that has no default a value.");
			break;
		case ERRCODE_CHECK_VIOLATION:
		case ERRCODE_EXCLUSION_VIOLATION:
			e->message = pstrdup("a value breaks a rule of the record type");
			e->hint = pstrdup("See the field descriptions for the allowed values.");
			break;
		case ERRCODE_INSUFFICIENT_PRIVILEGE:
			e->message = pstrdup("permission denied");
			e->hint = pstrdup("The records or fields involved are not yours to read or change.");
			break;
		case ERRCODE_GRAPHQL_AT_MOST:
			e->message = clip(ed->message);
			e->hint = clip(ed->hint);
			break;
		default:
			if (ERRCODE_TO_CATEGORY(ed->sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
				ed->sqlerrcode == ERRCODE_RAISE_EXCEPTION ||
				PGUNSIXBIT(ed->sqlerrcode) == 'P' ||
				(code[0] == 'P' && code[1] == 'T'))
			{
				/* about the client's own values, or written for clients by a domain function */
				e->message = clip(ed->message);
				e->hint = clip(ed->hint);
			}
			else
			{
				e->message = pstrdup("the operation failed");
				e->hint = pstrdup("Try again later; if it persists, report the time of the request.");
				elog(LOG, "bv_graphql: an operation failed with SQLSTATE %s", code);
			}
			break;
	}
	return e;
}

/* ---------- plans and execution ---------- */

typedef struct PlanEntry
{
	char key[NAMEDATALEN]; /* hash of the statement */
	char *sql;
	SPIPlanPtr plan;
} PlanEntry;

static HTAB *plans;
static MemoryContext plans_cxt;
static Size plans_text; /* text length of the kept statements */

static SPIPlanPtr
get_plan(GCompile *c, const char *sql)
{
	char key[NAMEDATALEN];
	PlanEntry *pe;
	bool found;
	SPIPlanPtr plan;

	if (strlen(sql) > PLAN_KEY_MAX)
	{
		plan = SPI_prepare(sql, c->nparams, c->ptypes);
		if (plan == NULL)
			elog(ERROR, "bv_graphql: could not prepare a statement: %s", SPI_result_code_string(SPI_result));
		return plan;
	}
	if (plans == NULL)
	{
		HASHCTL ctl;

		plans_cxt = AllocSetContextCreate(CacheMemoryContext, "bv_graphql plans", ALLOCSET_DEFAULT_SIZES);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(PlanEntry);
		ctl.hcxt = plans_cxt;
		plans = hash_create("bv_graphql plans", PLAN_CACHE_MAX, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	/* the key: a strong hash of the text and parameter types; the text is compared too */
	{
		StringInfoData k;
		char hex[33];
		const char *errstr = NULL;

		initStringInfo(&k);
		appendBinaryStringInfo(&k, sql, strlen(sql));
		appendBinaryStringInfo(&k, (char *) c->ptypes, sizeof(Oid) * c->nparams);
		if (!pg_md5_hash(k.data, k.len, hex, &errstr))
			elog(ERROR, "bv_graphql: could not hash a statement");
		snprintf(key, sizeof(key), "%s:%d", hex, c->nparams);
	}
	pe = hash_search(plans, key, HASH_FIND, NULL);
	if (pe && strcmp(pe->sql, sql) == 0)
		return pe->plan;
	/*
	 * A generic plan from the first execution: the values are parameters
	 * (limits, filter values), and planning a nested statement costs more
	 * than running it, so re-planning per call (custom plans) loses.
	 */
	plan = SPI_prepare_cursor(sql, c->nparams, c->ptypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "bv_graphql: could not prepare a statement: %s", SPI_result_code_string(SPI_result));
	/*
	 * Bounded by count and by text: a kept plan costs about a hundred times
	 * its statement's length, and clients choose the shapes, so 256 large
	 * ones per backend (times PostgREST's pool) would be gigabytes.
	 */
	if (hash_get_num_entries(plans) >= PLAN_CACHE_MAX || plans_text + strlen(sql) > PLAN_CACHE_TEXT_MAX)
	{
		HASH_SEQ_STATUS st;
		PlanEntry *old;

		hash_seq_init(&st, plans);
		while ((old = hash_seq_search(&st)) != NULL)
		{
			SPI_freeplan(old->plan);
			pfree(old->sql);
			hash_search(plans, old->key, HASH_REMOVE, NULL);
		}
		plans_text = 0;
	}
	if (SPI_keepplan(plan) != 0)
		return plan;
	pe = hash_search(plans, key, HASH_ENTER, &found);
	if (found)
	{
		SPI_freeplan(pe->plan);
		plans_text -= strlen(pe->sql);
		pfree(pe->sql);
	}
	pe->sql = MemoryContextStrdup(plans_cxt, sql);
	plans_text += strlen(sql);
	pe->plan = plan;
	return plan;
}

/*
 * Run one compiled statement in a subtransaction.  Returns its one text
 * column, copied into cxt; NULL and *err on a database error.
 */
static char *
run_statement(GCompile *c, MemoryContext cxt, const char *path, GErr **err)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	char *volatile result = NULL;

	*err = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		SPIPlanPtr plan = get_plan(c, c->sql.data);
		int rc = SPI_execute_plan(plan, c->pvalues, c->pnulls, false, 0);

		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "bv_graphql: a statement returned %d (%d rows)", rc, (int) SPI_processed);
		{
			char *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			result = MemoryContextStrdup(cxt, v ? v : "null");
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (ERRCODE_TO_CATEGORY(ed->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION ||
			ERRCODE_TO_CATEGORY(ed->sqlerrcode) == ERRCODE_INSUFFICIENT_RESOURCES ||
			ERRCODE_TO_CATEGORY(ed->sqlerrcode) == ERRCODE_PROGRAM_LIMIT_EXCEEDED)
			ReThrowError(ed);
		MemoryContextSwitchTo(cxt);
		*err = map_sql_error(ed, path);
		MemoryContextSwitchTo(oldcxt);
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/* ---------- variables ---------- */

static GqlValue *jsonb_to_value(JsonbIterator **it, JsonbValue *v, JsonbIteratorToken tok, GqlLoc loc);

static GqlValue *
scalar_value(JsonbValue *v, GqlLoc loc)
{
	GqlValue *g = palloc0(sizeof(GqlValue));

	g->loc = loc;
	g->from_json = true;
	switch (v->type)
	{
		case jbvNull:
			g->kind = GQL_V_NULL;
			break;
		case jbvString:
			g->kind = GQL_V_STRING;
			g->str = pnstrdup(v->val.string.val, v->val.string.len);
			break;
		case jbvBool:
			g->kind = GQL_V_BOOLEAN;
			g->boolean = v->val.boolean;
			break;
		case jbvNumeric:
			g->str = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
			g->kind = strpbrk(g->str, ".eE") ? GQL_V_FLOAT : GQL_V_INT;
			break;
		default:
			g->kind = GQL_V_NULL;
			break;
	}
	return g;
}

static GqlValue *
jsonb_to_value(JsonbIterator **it, JsonbValue *v, JsonbIteratorToken tok, GqlLoc loc)
{
	GqlValue *g;
	List *items = NIL, *names = NIL;
	ListCell *lc;
	int i = 0;

	if (tok != WJB_BEGIN_ARRAY && tok != WJB_BEGIN_OBJECT)
		return scalar_value(v, loc);
	check_stack_depth();
	g = palloc0(sizeof(GqlValue));
	g->loc = loc;
	g->from_json = true;
	g->kind = tok == WJB_BEGIN_ARRAY ? GQL_V_LIST : GQL_V_OBJECT;
	for (;;)
	{
		JsonbValue kv;

		tok = JsonbIteratorNext(it, &kv, false);
		if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT || tok == WJB_DONE)
			break;
		if (tok == WJB_KEY)
		{
			names = lappend(names, pnstrdup(kv.val.string.val, kv.val.string.len));
			tok = JsonbIteratorNext(it, &kv, false);
		}
		items = lappend(items, jsonb_to_value(it, &kv, tok, loc));
	}
	g->n = list_length(items);
	g->items = palloc(sizeof(GqlValue *) * Max(g->n, 1));
	foreach (lc, items)
		g->items[i++] = lfirst(lc);
	if (g->kind == GQL_V_OBJECT)
	{
		i = 0;
		g->names = palloc(sizeof(char *) * Max(g->n, 1));
		foreach (lc, names)
			g->names[i++] = lfirst(lc);
	}
	return g;
}

/* The value of key in a jsonb object, as a GraphQL value; NULL when absent. */
static GqlValue *
variable_value(Jsonb *vars, const char *key, GqlLoc loc)
{
	JsonbValue k, *found;

	if (vars == NULL)
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	found = findJsonbValueFromContainer(&vars->root, JB_FOBJECT, &k);
	if (found == NULL)
		return NULL;
	if (found->type == jbvBinary)
	{
		JsonbIterator *it = JsonbIteratorInit(found->val.binary.data);
		JsonbValue v;
		JsonbIteratorToken tok = JsonbIteratorNext(&it, &v, false);

		return jsonb_to_value(&it, &v, tok, loc);
	}
	return scalar_value(found, loc);
}

static GType *
var_type(GCompile *c, GqlTypeRef *r)
{
	GType *t;

	if (r->kind == GQL_T_NON_NULL)
		return gql_nn(c->schema, var_type(c, r->of));
	if (r->kind == GQL_T_LIST)
		return gql_list(c->schema, var_type(c, r->of));
	t = gql_type_by_name(c->schema, r->name);
	if (t == NULL)
		gql_error(r->loc, "Unknown type \"%.64s\".", r->name);
	if (t->kind != GK_SCALAR && t->kind != GK_ENUM && t->kind != GK_INPUT)
		gql_error(r->loc, "Variable type \"%s\" is not an input type.", t->name);
	return t;
}

static void
coerce_variables(GCompile *c, Jsonb *vars)
{
	GqlDefinition *op = c->op;

	c->nvars = op->nvars;
	c->vars = palloc0(sizeof(GVar) * Max(op->nvars, 1));
	for (int i = 0; i < op->nvars; i++)
	{
		GqlVarDef *vd = &op->vars[i];
		GType *t = var_type(c, vd->type);
		GqlValue *v = variable_value(vars, vd->name, vd->loc);

		for (int k = 0; k < i; k++)
			if (strcmp(op->vars[k].name, vd->name) == 0)
				gql_error(vd->loc, "There can be only one variable named \"$%.64s\".", vd->name);
		for (int k = 0; k < vd->ndirs; k++)
			gql_error(vd->dirs[k].loc, "Unknown directive \"@%.64s\".", vd->dirs[k].name);
		if (vd->def && vd->def->kind == GQL_V_VARIABLE)
			gql_error(vd->def->loc, "A default value cannot be a variable.");
		if (v == NULL)
			v = vd->def;
		if ((v == NULL || v->kind == GQL_V_NULL) && t->kind == GK_NON_NULL)
			gql_error(vd->loc, "Variable \"$%.64s\" of required type \"%s!\" was not provided.",
					  vd->name, gql_named(t)->name);
		c->vars[i].name = vd->name;
		c->vars[i].value = v;
	}
}

/* ---------- the request ---------- */

static void *
palloc_zero_cb(void *ctx, size_t size)
{
	if (size >= MaxAllocSize)
		return NULL;
	return palloc0(size);
}

static GqlDefinition *
choose_operation(GqlDocument *doc, const char *name)
{
	GqlDefinition *op = NULL;
	int nops = 0;

	for (int i = 0; i < doc->n; i++)
	{
		GqlDefinition *d = doc->defs[i];

		for (int k = 0; k < i; k++)
		{
			GqlDefinition *o = doc->defs[k];

			if (d->name && o->name && o->is_fragment == d->is_fragment && strcmp(o->name, d->name) == 0)
				gql_error(d->loc, d->is_fragment ? "There can be only one fragment named \"%.64s\"." : "There can be only one operation named \"%.64s\".",
						  d->name);
		}
		if (d->is_fragment)
			continue;
		nops++;
		if (name ? (d->name && strcmp(d->name, name) == 0) : op == NULL)
			op = d;
	}
	for (int i = 0; i < doc->n; i++)
		if (!doc->defs[i]->is_fragment && doc->defs[i]->name == NULL && nops > 1)
			gql_error(doc->defs[i]->loc, "This anonymous operation must be the only defined operation.");
	if (name && op == NULL)
		gql_error((GqlLoc){0, 0}, "Unknown operation named \"%.64s\".", name);
	if (name == NULL && nops > 1)
		gql_error((GqlLoc){0, 0}, "Must provide operation name if query contains multiple operations.");
	if (op == NULL)
		gql_error((GqlLoc){0, 0}, "The document contains no operation.");
	if (op->op == GQL_OP_SUBSCRIPTION)
		gql_error(op->loc, "Subscriptions are not supported; use bv_realtime for live updates.");
	for (int i = 0; i < op->ndirs; i++)
		gql_error(op->dirs[i].loc, "Unknown directive \"@%.64s\".", op->dirs[i].name);
	return op;
}

typedef struct Compiled
{
	const char *key;
	char *literal; /* JSON text known at compile time, or NULL */
	GCompile *stmt;
} Compiled;

static GCompile *
new_compile(GCompile *proto)
{
	GCompile *c = palloc0(sizeof(GCompile));

	c->schema = proto->schema;
	c->doc = proto->doc;
	c->op = proto->op;
	c->nvars = proto->nvars;
	c->vars = proto->vars;
	c->nfields = proto->nfields;
	c->nfilters = proto->nfilters;
	c->records = proto->records;
	c->scale = 1;
	initStringInfo(&c->sql);
	return c;
}

/* Compile the operation; a list of Compiled (one per root field of a mutation, one for a query). */
static List *
compile(GCompile *proto)
{
	GType *root = proto->op->op == GQL_OP_MUTATION ? proto->schema->mutation : proto->schema->query;
	List *sels, *out = NIL;
	ListCell *lc;
	bool all_static = true;

	if (root == NULL)
		gql_error(proto->op->loc, "Schema is not configured for mutations: the role may change nothing here.");
	sels = gql_collect(proto, root, list_make1(proto->op->sel));
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);

		all_static &= s->field == NULL || s->field->kind == FK_INTROSPECTION;
	}
	if (all_static || proto->op->op == GQL_OP_QUERY)
	{
		Compiled *cp = palloc0(sizeof(Compiled));

		if (all_static)
		{
			StringInfoData j;

			initStringInfo(&j);
			appendStringInfoChar(&j, '{');
			foreach (lc, sels)
			{
				GSel *s = lfirst(lc);

				if (foreach_current_index(lc))
					appendStringInfoChar(&j, ',');
				escape_json(&j, s->key);
				appendStringInfoChar(&j, ':');
				if (s->field == NULL)
					escape_json(&j, root->name);
				else
					gql_introspect(proto, s, &j);
				if (j.len > 64 * 1024 * 1024)
					gql_error(s->first->loc, "the introspection answer is too large");
			}
			appendStringInfoChar(&j, '}');
			cp->literal = j.data;
		}
		else
		{
			cp->stmt = new_compile(proto);
			gql_compile_query(cp->stmt, sels, root);
		}
		return list_make1(cp);
	}
	/*
	 * Each mutation root field is a statement of its own (a function call, an
	 * insert of up to max_rows objects...), while the request rate limit
	 * counts the request once: aliases would multiply a client's writes by
	 * max_aliases (red-team round 5).
	 */
	{
		int nmut = 0;

		foreach (lc, sels)
		{
			GSel *s = lfirst(lc);

			if (s->field != NULL && s->field->kind != FK_INTROSPECTION && ++nmut > bv_graphql_max_mutations)
				gql_error(s->first->loc, "the operation has more than %d mutation fields (bv_graphql.max_mutations)",
						  bv_graphql_max_mutations);
		}
	}
	foreach (lc, sels)
	{
		GSel *s = lfirst(lc);
		Compiled *cp = palloc0(sizeof(Compiled));

		cp->key = s->key;
		if (s->field == NULL)
		{
			StringInfoData j;

			initStringInfo(&j);
			escape_json(&j, root->name);
			cp->literal = j.data;
		}
		else if (s->field->kind == FK_INTROSPECTION)
		{
			StringInfoData j;

			initStringInfo(&j);
			gql_introspect(proto, s, &j);
			cp->literal = j.data;
		}
		else
		{
			cp->stmt = new_compile(proto);
			gql_compile_mutation_field(cp->stmt, s);
			/* the limits hold for the whole operation, not per root field */
			proto->nfields = cp->stmt->nfields;
			proto->nfilters = cp->stmt->nfilters;
			proto->records = cp->stmt->records;
		}
		out = lappend(out, cp);
	}
	return out;
}

static char *
resolve(text *query, Jsonb *vars, text *opname)
{
	MemoryContext cxt = CurrentMemoryContext;
	GqlLimits limits;
	GqlParseError perr;
	GqlDocument *doc;
	char *src;
	int len;
	GCompile proto;
	List *volatile compiled = NIL;
	ErrorData *volatile cerr = NULL;
	StringInfoData data;
	List *volatile errors = NIL;
	ListCell *lc;

	if (query == NULL)
		return response(NULL, one_error("No query was given: send {\"query\": \"...\"}.", (GqlLoc){0, 0}, "BAD_REQUEST"));
	len = VARSIZE_ANY_EXHDR(query);
	if (len > bv_graphql_max_size)
		return response(NULL, one_error(psprintf("The document is larger than %d bytes (bv_graphql.max_size).",
												 bv_graphql_max_size),
										(GqlLoc){0, 0}, "BAD_REQUEST"));
	if (vars && !JB_ROOT_IS_OBJECT(vars))
		return response(NULL, one_error("\"variables\" must be a JSON object.", (GqlLoc){0, 0}, "BAD_REQUEST"));
	src = text_to_cstring(query);
	limits.max_depth = bv_graphql_max_depth;
	limits.max_tokens = bv_graphql_max_tokens;
	limits.max_aliases = bv_graphql_max_aliases;
	doc = gql_parse(src, len, &limits, palloc_zero_cb, NULL, &perr);
	if (doc == NULL)
		return response(NULL, one_error(perr.message, perr.loc, "GRAPHQL_PARSE_FAILED"));

	memset(&proto, 0, sizeof(proto));
	proto.doc = doc;
	proto.schema = gql_schema_get();
	/* section 5: the whole document, before an operation is chosen; every error found */
	{
		List *verrors = gql_validate(proto.schema, doc);

		foreach (lc, verrors)
		{
			GqlError *ve = lfirst(lc);
			GErr *e = palloc0(sizeof(GErr));

			e->message = ve->message;
			e->nlocs = ve->nlocs;
			e->locs = ve->locs;
			e->code = "GRAPHQL_VALIDATION_FAILED";
			errors = lappend(errors, e);
		}
		if (errors)
			return response(NULL, errors);
	}
	PG_TRY();
	{
		proto.op = choose_operation(doc, opname ? text_to_cstring(opname) : NULL);
		coerce_variables(&proto, vars);
		compiled = compile(&proto);
	}
	PG_CATCH();
	{
		ErrorData *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		if (ed->sqlerrcode != ERRCODE_GRAPHQL_REQUEST)
			PG_RE_THROW();
		FlushErrorState();
		cerr = ed;
	}
	PG_END_TRY();
	if (cerr)
		return response(NULL, one_error(cerr->message, gql_error_loc, "GRAPHQL_VALIDATION_FAILED"));

	initStringInfo(&data);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "bv_graphql: SPI_connect failed");
	if (proto.op->op == GQL_OP_QUERY || linitial(compiled) == NULL || ((Compiled *) linitial(compiled))->key == NULL)
	{
		Compiled *cp = linitial(compiled);

		if (cp->literal)
			appendStringInfoString(&data, cp->literal);
		else
		{
			GErr *e;
			char *r = run_statement(cp->stmt, cxt, NULL, &e);

			if (r)
				appendStringInfoString(&data, r);
			else
			{
				appendStringInfoString(&data, "null");
				errors = lappend(errors, e);
			}
		}
	}
	else
	{
		appendStringInfoChar(&data, '{');
		foreach (lc, compiled)
		{
			Compiled *cp = lfirst(lc);
			char *r = cp->literal;

			if (foreach_current_index(lc))
				appendStringInfoChar(&data, ',');
			escape_json(&data, cp->key);
			appendStringInfoChar(&data, ':');
			if (r == NULL)
			{
				GErr *e;

				r = run_statement(cp->stmt, cxt, cp->key, &e);
				if (r == NULL)
				{
					r = "null";
					errors = lappend(errors, e);
				}
			}
			appendStringInfoString(&data, r);
		}
		appendStringInfoChar(&data, '}');
	}
	SPI_finish();
	MemoryContextSwitchTo(cxt);
	return response(data.data, errors);
}

/*
 * One request of graphql.resolve / graphql.resolve_json: the response as
 * JSON text, allocated in the caller's context (the request's own context
 * is deleted before returning).
 */
static char *
resolve_request(FunctionCallInfo fcinfo)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "bv_graphql request", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	char *result;
	char *out;
	Jsonb *vars = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	/* GraphQL over HTTP: "variables": null is the same as no variables */
	if (vars && JB_ROOT_IS_SCALAR(vars))
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&vars->root, 0);

		if (v && v->type == jbvNull)
			vars = NULL;
	}
	result = resolve(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), vars, PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2));
	MemoryContextSwitchTo(old);
	out = pstrdup(result);
	MemoryContextDelete(cxt);
	return out;
}

PG_FUNCTION_INFO_V1(bv_graphql_resolve);

/*
 * graphql.resolve(query text, variables jsonb, "operationName" text,
 * extensions jsonb) returns jsonb: the response as jsonb (which orders
 * object keys its own way: shorter keys first).
 */
Datum
bv_graphql_resolve(PG_FUNCTION_ARGS)
{
	char *text = resolve_request(fcinfo);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

PG_FUNCTION_INFO_V1(bv_graphql_resolve_json);

/*
 * graphql.resolve_json(...) returns json: the same response as json text,
 * object keys in the query's selection order as the specification
 * requires (section 7.2.2); api.graphql (PostgREST's POST /rpc/graphql)
 * returns this one.
 */
Datum
bv_graphql_resolve_json(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(resolve_request(fcinfo)));
}

PG_FUNCTION_INFO_V1(bv_graphql_invalidate);

/*
 * graphql._invalidate(): make every backend rebuild its GraphQL schema.
 * Called by the extension's event trigger after DDL (COMMENT and GRANT on
 * functions send no relcache invalidation of their own): invalidating the
 * relcache entry of pg_description reaches every backend's callback at
 * commit and costs one catalog entry.
 */
Datum
bv_graphql_invalidate(PG_FUNCTION_ARGS)
{
	CacheInvalidateRelcacheByRelid(DescriptionRelationId);
	PG_RETURN_VOID();
}
