/*-------------------------------------------------------------------------
 *
 * schema.c
 *	  The catalog model behind the GraphQL schema: which tables, views,
 *	  columns, keys, foreign keys and functions of the exposed schemas
 *	  (bv_graphql.schemas) the current role may use; cached per backend.
 *
 * Reflection runs a handful of catalog queries through SPI as the calling
 * role, so has_table_privilege() and friends answer for that role: a type
 * per relation it can SELECT (or some of whose columns it can SELECT), the
 * columns it can see, mutations only where it holds INSERT / UPDATE /
 * DELETE, functions only where it holds EXECUTE.  Comments become
 * descriptions; a comment may carry a directive @graphql({...}) with
 * "name" (rename a type, field or function) and, for views,
 * "primary_key_columns" (what a primary key would give: nodeId, cursors).
 *
 * Cache: one GSchema per (role, bv_graphql.schemas) in its own memory
 * context under CacheMemoryContext; a few entries at most (a backend
 * usually serves a handful of roles through PostgREST's role switching).
 * A relcache invalidation of an exposed relation (ALTER, GRANT/REVOKE,
 * ANALYZE...), of pg_description (what graphql._invalidate(), called by the
 * extension's event trigger after any DDL outside temporary schemas, sends:
 * new tables, COMMENT, GRANT on functions) or of everything, and any syscache
 * invalidation of pg_proc, pg_namespace, pg_enum, roles or role membership
 * marks the whole cache stale.  Other relations' invalidations (other
 * tables' ANALYZE, temporary tables) are ignored.  The callbacks
 * only set a flag: entries are freed at the next gql_schema_get(), never
 * while a request may be using them.  The flag is also set when an
 * invalidation arrives during a build, so a half-consistent model is used
 * for that one request at most.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_description.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "bv_graphql.h"

#define MAX_CACHED 8

static GSchema *cache[MAX_CACHED];
static int ncached;
static bool stale;
static bool callbacks_registered;

/* the relations of every cached schema: only their invalidations matter */
static Oid *watched;
static int nwatched;

static void
inval_relcache(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == DescriptionRelationId)
	{
		stale = true;
		return;
	}
	for (int i = 0; i < nwatched; i++)
		if (watched[i] == relid)
		{
			stale = true;
			return;
		}
}

/* Rebuild the watched list from the cached schemas. */
static void
watch_cached(void)
{
	int n = 0;

	for (int i = 0; i < ncached; i++)
		n += list_length(cache[i]->tables);
	if (watched)
		pfree(watched);
	watched = MemoryContextAlloc(CacheMemoryContext, sizeof(Oid) * Max(n, 1));
	nwatched = 0;
	for (int i = 0; i < ncached; i++)
	{
		ListCell *lc;

		foreach (lc, cache[i]->tables)
			watched[nwatched++] = ((GTable *) lfirst(lc))->oid;
	}
}

static void
inval_syscache(Datum arg, int cacheid, uint32 hashvalue)
{
	stale = true;
}

void
gql_schema_init(void)
{
	/*
	 * Not pg_attribute, pg_type or pg_constraint: every temporary table of
	 * any session changes those; changes of exposed relations arrive as
	 * their relcache invalidations, new relations through the event trigger.
	 */
	static const int caches[] = {PROCOID, NAMESPACEOID, ENUMOID, AUTHMEMROLEMEM, AUTHOID};

	if (callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(inval_relcache, (Datum) 0);
	for (int i = 0; i < lengthof(caches); i++)
		CacheRegisterSyscacheCallback(caches[i], inval_syscache, (Datum) 0);
	callbacks_registered = true;
}

/* ---------- SPI helpers ---------- */

static char *
col_text(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

static Datum
col_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

static bool
col_bool(int row, int col)
{
	bool isnull;
	Datum d = col_datum(row, col, &isnull);

	return !isnull && DatumGetBool(d);
}

static char *
pstr(MemoryContext cxt, const char *s)
{
	return s ? MemoryContextStrdup(cxt, s) : NULL;
}

/* A name from an @graphql({"name": ...}) directive, if it is a GraphQL Name. */
static char *
directive_name(const char *name)
{
	/* names starting with "__" are reserved for introspection */
	return name && gql_is_name(name) && strncmp(name, "__", 2) != 0 ? pstrdup(name) : NULL;
}

static const char *
qualified(MemoryContext cxt, const char *schema, const char *name)
{
	return MemoryContextStrdup(cxt, quote_qualified_identifier(schema, name));
}

static GTable *
table_by_oid(GSchema *s, Oid oid)
{
	ListCell *lc;

	foreach (lc, s->tables)
	{
		GTable *t = lfirst(lc);

		if (t->oid == oid)
			return t;
	}
	return NULL;
}

static int
column_by_attnum(GTable *t, int attnum)
{
	for (int i = 0; i < t->ncols; i++)
		if (t->cols[i].attnum == attnum)
			return i;
	return -1;
}

static int
column_by_name(GTable *t, const char *name)
{
	for (int i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].name, name) == 0)
			return i;
	return -1;
}

/* ---------- the reflection queries ---------- */

static const char *tables_sql =
	"SELECT c.oid, n.nspname, c.relname, c.relkind::text,"
	"       graphql._comment_text(pg_catalog.obj_description(c.oid, 'pg_class')),"
	"       graphql._comment_name(pg_catalog.obj_description(c.oid, 'pg_class')),"
	"       pg_catalog.has_table_privilege(c.oid, 'INSERT'),"
	"       pg_catalog.has_table_privilege(c.oid, 'UPDATE'),"
	"       pg_catalog.has_table_privilege(c.oid, 'DELETE'),"
	"       graphql._comment_pk(pg_catalog.obj_description(c.oid, 'pg_class'))"
	"  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	" WHERE n.nspname = ANY ($1) AND c.relkind IN ('r', 'v', 'm', 'f', 'p') AND NOT c.relispartition"
	"   AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')"
	"   AND (pg_catalog.has_table_privilege(c.oid, 'SELECT')"
	"        OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT'))"
	"   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid"
	"                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid"
	"                     AND d.deptype = 'e' AND e.extname = 'bv_graphql')"
	" ORDER BY pg_catalog.array_position($1, n.nspname::text), c.relname COLLATE \"C\"";

static const char *columns_sql =
	"SELECT a.attrelid, a.attname, a.attnum, a.atttypid, a.atttypmod, a.attnotnull,"
	"       graphql._comment_text(pg_catalog.col_description(a.attrelid, a.attnum)),"
	"       graphql._comment_name(pg_catalog.col_description(a.attrelid, a.attnum)),"
	"       pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'INSERT')"
	"         AND a.attidentity <> 'a' AND a.attgenerated = '',"
	"       pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'UPDATE')"
	"         AND a.attidentity <> 'a' AND a.attgenerated = ''"
	"  FROM pg_catalog.pg_attribute a"
	" WHERE a.attrelid = ANY ($1) AND a.attnum > 0 AND NOT a.attisdropped"
	"   AND pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT')"
	" ORDER BY a.attrelid, a.attnum";

static const char *keys_sql =
	"SELECT conrelid, contype::text, conkey::int[], confrelid, confkey::int[], conname"
	"  FROM pg_catalog.pg_constraint"
	" WHERE conrelid = ANY ($1) AND (contype = 'p' OR (contype = 'f' AND confrelid = ANY ($1)))"
	" ORDER BY conrelid, contype DESC, conname";

static const char *funcs_sql =
	"SELECT p.oid, n.nspname, p.proname, p.provolatile::text, p.proretset, p.prorettype,"
	"       (SELECT t.typrelid FROM pg_catalog.pg_type t WHERE t.oid = p.prorettype),"
	"       p.proargtypes::oid[], p.proargnames, p.pronargs - p.pronargdefaults,"
	"       graphql._comment_text(pg_catalog.obj_description(p.oid, 'pg_proc')),"
	"       graphql._comment_name(pg_catalog.obj_description(p.oid, 'pg_proc'))"
	"  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
	" WHERE n.nspname = ANY ($1) AND p.prokind = 'f' AND p.proallargtypes IS NULL"
	"   AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')"
	"   AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')"
	"   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.oid = ANY (p.proargtypes::oid[] || p.prorettype)"
	"                     AND t.typtype = 'p' AND t.oid <> 'pg_catalog.record'::pg_catalog.regtype)"
	"   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid"
	"                   WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid"
	"                     AND d.deptype = 'e' AND e.extname = 'bv_graphql')"
	" ORDER BY pg_catalog.array_position($1, n.nspname::text), p.proname COLLATE \"C\","
	" pg_catalog.oidvectortypes(p.proargtypes), p.oid";

static void
load_tables(GSchema *s, Datum schemas)
{
	Oid argtypes[1] = {TEXTARRAYOID};
	Datum args[1] = {schemas};

	if (SPI_execute_with_args(tables_sql, 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "bv_graphql: table reflection failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(s->cxt);
		GTable *t = palloc0(sizeof(GTable));
		bool isnull;
		char *rename;

		t->oid = DatumGetObjectId(col_datum(i, 1, &isnull));
		t->schema = pstr(s->cxt, col_text(i, 2));
		t->name = pstr(s->cxt, col_text(i, 3));
		t->relkind = col_text(i, 4)[0];
		t->description = pstr(s->cxt, col_text(i, 5));
		rename = directive_name(col_text(i, 6));
		t->gname = rename ? pstrdup(rename) : gql_upper_camel(t->name);
		t->qname = qualified(s->cxt, t->schema, t->name);
		t->can_insert = col_bool(i, 7) && t->relkind != 'm';
		t->can_update = col_bool(i, 8) && t->relkind != 'm';
		t->can_delete = col_bool(i, 9) && t->relkind != 'm';
		/* a view's primary_key_columns, applied once the columns are known */
		{
			Datum d = col_datum(i, 10, &isnull);

			if (!isnull)
			{
				Datum *elems;
				bool *nulls;
				int ne;

				deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &ne);
				for (int k = 0; k < ne; k++)
					t->pk_names = lappend(t->pk_names, nulls[k] ? NULL : TextDatumGetCString(elems[k]));
			}
		}
		s->tables = lappend(s->tables, t);
		MemoryContextSwitchTo(old);
	}
}

static void
load_columns(GSchema *s, Datum oids)
{
	Oid argtypes[1] = {OIDARRAYOID};
	Datum args[1] = {oids};
	GTable *cur = NULL;
	int cap = 0;

	if (SPI_execute_with_args(columns_sql, 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "bv_graphql: column reflection failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool isnull;
		Oid relid = DatumGetObjectId(col_datum(i, 1, &isnull));
		MemoryContext old;
		GColumn *c;
		char *rename;
		int32 typmod;

		if (cur == NULL || cur->oid != relid)
		{
			cur = table_by_oid(s, relid);
			cap = 0;
		}
		if (cur == NULL)
			continue;
		old = MemoryContextSwitchTo(s->cxt);
		if (cur->ncols == cap)
		{
			cap = cap ? cap * 2 : 16;
			cur->cols = cur->cols ? repalloc(cur->cols, cap * sizeof(GColumn)) : palloc(cap * sizeof(GColumn));
		}
		c = &cur->cols[cur->ncols++];
		memset(c, 0, sizeof(GColumn));
		c->name = pstrdup(col_text(i, 2));
		c->attnum = DatumGetInt16(col_datum(i, 3, &isnull));
		c->typid = DatumGetObjectId(col_datum(i, 4, &isnull));
		typmod = DatumGetInt32(col_datum(i, 5, &isnull));
		c->sqltype = format_type_extended(c->typid, typmod,
										  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
		c->notnull = col_bool(i, 6);
		c->description = pstr(s->cxt, col_text(i, 7));
		rename = directive_name(col_text(i, 8));
		c->gname = rename ? pstrdup(rename) : gql_lower_camel(c->name);
		c->can_insert = col_bool(i, 9);
		c->can_update = col_bool(i, 10);
		MemoryContextSwitchTo(old);
	}
}

/* int2vector/int[] of attnums to column indexes; false if one is not visible */
static bool
attnums_to_cols(GSchema *s, GTable *t, Datum arr, int **out, int *n)
{
	ArrayType *a = DatumGetArrayTypeP(arr);
	Datum *elems;
	bool *nulls;
	int ne;

	deconstruct_array(a, INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, &ne);
	*out = MemoryContextAlloc(s->cxt, sizeof(int) * Max(ne, 1));
	*n = ne;
	for (int k = 0; k < ne; k++)
	{
		(*out)[k] = column_by_attnum(t, DatumGetInt32(elems[k]));
		if ((*out)[k] < 0)
			return false;
	}
	return true;
}

static void
add_rel(GSchema *s, GTable *from, GTable *to, bool to_many, int n, int *from_cols, int *to_cols)
{
	GRel *r = MemoryContextAllocZero(s->cxt, sizeof(GRel));

	r->from = from;
	r->to = to;
	r->to_many = to_many;
	r->n = n;
	r->from_cols = from_cols;
	r->to_cols = to_cols;
	from->rels = lappend(from->rels, r);
}

static void
load_keys(GSchema *s, Datum oids)
{
	Oid argtypes[1] = {OIDARRAYOID};
	Datum args[1] = {oids};
	MemoryContext old;

	if (SPI_execute_with_args(keys_sql, 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "bv_graphql: key reflection failed");
	old = MemoryContextSwitchTo(s->cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool isnull;
		GTable *t = table_by_oid(s, DatumGetObjectId(col_datum(i, 1, &isnull)));
		char kind = col_text(i, 2)[0];
		Datum conkey = col_datum(i, 3, &isnull);

		if (t == NULL)
			continue;
		if (kind == 'p')
		{
			int *pk, n;

			if (attnums_to_cols(s, t, conkey, &pk, &n))
			{
				t->pk = pk;
				t->npk = n;
			}
		}
		else
		{
			GTable *to = table_by_oid(s, DatumGetObjectId(col_datum(i, 4, &isnull)));
			Datum confkey = col_datum(i, 5, &isnull);
			int *fc, *tc, n1, n2;

			if (to == NULL || !attnums_to_cols(s, t, conkey, &fc, &n1) ||
				!attnums_to_cols(s, to, confkey, &tc, &n2) || n1 != n2)
				continue;
			add_rel(s, t, to, false, n1, fc, tc);
			add_rel(s, to, t, true, n1, tc, fc);
		}
	}
	MemoryContextSwitchTo(old);
}

/* Views: primary_key_columns from the @graphql directive of the comment. */
static void
apply_view_keys(GSchema *s)
{
	ListCell *lc;

	foreach (lc, s->tables)
	{
		GTable *t = lfirst(lc);
		int n;
		int *pk;
		bool ok = true;

		if (t->npk > 0 || t->pk_names == NIL)
			continue;
		n = list_length(t->pk_names);
		if (n > 16)
			continue;
		pk = MemoryContextAlloc(s->cxt, sizeof(int) * n);
		for (int k = 0; k < n && ok; k++)
		{
			char *name = list_nth(t->pk_names, k);

			pk[k] = name ? column_by_name(t, name) : -1;
			ok = pk[k] >= 0;
		}
		if (ok)
		{
			t->pk = pk;
			t->npk = n;
		}
	}
}

static void
load_funcs(GSchema *s, Datum schemas)
{
	Oid argtypes[1] = {TEXTARRAYOID};
	Datum args[1] = {schemas};

	if (SPI_execute_with_args(funcs_sql, 1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "bv_graphql: function reflection failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(s->cxt);
		GFunc *f = palloc0(sizeof(GFunc));
		bool isnull, nn;
		Datum d;
		char *rename;
		Oid rettype, retrel;
		int nrequired;
		bool ok = true;

		f->oid = DatumGetObjectId(col_datum(i, 1, &isnull));
		f->qname = qualified(s->cxt, col_text(i, 2), col_text(i, 3));
		f->is_mutation = col_text(i, 4)[0] == 'v';
		f->retset = col_bool(i, 5);
		rettype = DatumGetObjectId(col_datum(i, 6, &isnull));
		retrel = DatumGetObjectId(col_datum(i, 7, &nn));
		if (!nn && OidIsValid(retrel))
		{
			f->ret_table = table_by_oid(s, retrel);
			ok = f->ret_table != NULL;
		}
		else if (rettype == RECORDOID || rettype == VOIDOID)
			ok = false;
		else
			f->ret_scalar = (GType *) (uintptr_t) rettype; /* resolved by types.c */
		d = col_datum(i, 8, &isnull);
		{
			Datum *elems;
			bool *nulls;
			int ne;

			deconstruct_array(DatumGetArrayTypeP(d), OIDOID, 4, true, TYPALIGN_INT, &elems, &nulls, &ne);
			f->nargs = ne;
			f->argnames = palloc0(sizeof(char *) * Max(ne, 1));
			f->argtypes = palloc0(sizeof(char *) * Max(ne, 1));
			f->arggtypes = palloc0(sizeof(GType *) * Max(ne, 1));
			f->arg_has_default = palloc0(sizeof(bool) * Max(ne, 1));
			nrequired = DatumGetInt32(col_datum(i, 10, &isnull));
			for (int k = 0; k < ne; k++)
			{
				Oid at = DatumGetObjectId(elems[k]);

				f->argtypes[k] = format_type_extended(at, -1, FORMAT_TYPE_FORCE_QUALIFY);
				f->arggtypes[k] = (GType *) (uintptr_t) at; /* resolved by types.c */
				f->arg_has_default[k] = k >= nrequired;
			}
		}
		d = col_datum(i, 9, &isnull);
		if (f->nargs > 0)
		{
			Datum *elems;
			bool *nulls;
			int ne;

			if (isnull)
				ok = false;
			else
			{
				deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &ne);
				for (int k = 0; k < f->nargs && ok; k++)
				{
					if (k >= ne || nulls[k])
						ok = false;
					else
					{
						f->argnames[k] = TextDatumGetCString(elems[k]);
						ok = gql_is_name(f->argnames[k]) && strncmp(f->argnames[k], "__", 2) != 0;
					}
				}
			}
		}
		f->description = pstr(s->cxt, col_text(i, 11));
		rename = directive_name(col_text(i, 12));
		f->gname = rename ? pstrdup(rename) : gql_lower_camel(col_text(i, 3));
		if (ok)
			s->funcs = lappend(s->funcs, f);
		MemoryContextSwitchTo(old);
	}
}

static GSchema *
build(Oid role, const char *schemas_setting)
{
	GSchema *s;
	MemoryContext cxt;
	char *rawcopy;
	List *names = NIL;
	ListCell *lc;
	Datum *elems;
	int n = 0;
	ArrayType *schemas, *oids;
	Datum *oidelems;
	int i = 0;

	cxt = AllocSetContextCreate(CacheMemoryContext, "bv_graphql schema", ALLOCSET_DEFAULT_SIZES);
	s = MemoryContextAllocZero(cxt, sizeof(GSchema));
	s->cxt = cxt;
	s->role = role;
	s->schemas = MemoryContextStrdup(cxt, schemas_setting);

	rawcopy = pstrdup(schemas_setting);
	if (!SplitIdentifierString(rawcopy, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bv_graphql.schemas is not a list of schema names"),
				 errhint("Set it to a comma-separated list such as 'commerce, api'.")));
	elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	foreach (lc, names)
		elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
	schemas = construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "bv_graphql: SPI_connect failed");
	load_tables(s, PointerGetDatum(schemas));
	oidelems = palloc(sizeof(Datum) * Max(list_length(s->tables), 1));
	foreach (lc, s->tables)
		oidelems[i++] = ObjectIdGetDatum(((GTable *) lfirst(lc))->oid);
	oids = construct_array(oidelems, i, OIDOID, 4, true, TYPALIGN_INT);
	load_columns(s, PointerGetDatum(oids));
	load_keys(s, PointerGetDatum(oids));
	apply_view_keys(s);
	load_funcs(s, PointerGetDatum(schemas));
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		gql_types_build(s);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return s;
}

/*
 * The schema for the current role and setting, built if needed.  Valid
 * until the next call (the caller uses it for one request).
 */
GSchema *
gql_schema_get(void)
{
	Oid role = GetUserId();
	GSchema *s;

	gql_schema_init();
	AcceptInvalidationMessages();
	if (stale)
	{
		for (int i = 0; i < ncached; i++)
			MemoryContextDelete(cache[i]->cxt);
		ncached = 0;
		nwatched = 0;
		stale = false;
	}
	for (int i = 0; i < ncached; i++)
		if (cache[i]->role == role && strcmp(cache[i]->schemas, bv_graphql_schemas) == 0)
			return cache[i];
	s = build(role, bv_graphql_schemas);
	if (ncached == MAX_CACHED)
	{
		MemoryContextDelete(cache[0]->cxt);
		memmove(cache, cache + 1, sizeof(GSchema *) * (MAX_CACHED - 1));
		ncached--;
	}
	/* an invalidation during the build leaves the result for this call only */
	if (!stale)
		cache[ncached++] = s;
	else
		MemoryContextSetParent(s->cxt, CurTransactionContext);
	watch_cached();
	return s;
}
