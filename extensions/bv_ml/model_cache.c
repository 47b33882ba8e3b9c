/*-------------------------------------------------------------------------
 *
 * model_cache.c
 *	  Per-backend cache of parsed models, keyed by (model id, row xmin).
 *
 * Parsing a model document (tens of thousands of jsonb numbers for a
 * boosted ensemble) costs far more than scoring a row, so each backend
 * parses a model once and keeps it.  A scoring call site resolves its model
 * name once per statement (predict.c keeps the result in fn_extra) with one
 * prepared, read-only SPI query that returns the registry row's id and
 * xmin.  Any UPDATE of the row gives it a new xmin, so a changed model is
 * never served from the cache: it is parsed again and replaces the old
 * entry.  A rolled-back change leaves the old xmin visible, which still
 * matches.  No invalidation messages are needed.
 *
 * Memory: entries live in "bv_ml models", a child of CacheMemoryContext,
 * one context per model.  A replaced model may still be referenced by
 * another call site of the running statement, so its context is retired
 * and deleted at the end of the transaction, not at once.  A parse that
 * fails leaves nothing behind: it runs in a context that only becomes the
 * cache's when the parse succeeded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "bv_ml.h"

typedef struct CacheEntry
{
	int64 id; /* hash key */
	TransactionId xmin;
	MemoryContext cxt;
	MlModel *model;
} CacheEntry;

static MemoryContext cache_cxt = NULL;
static HTAB *cache = NULL;
static List *retired = NIL; /* contexts to delete at transaction end */
static SPIPlanPtr resolve_plan = NULL;

/* Counts transaction ends: a resolved model is valid within one. */
uint64 ml_cache_generation = 0;

static void
cache_init(void)
{
	HASHCTL ctl;

	if (cache != NULL)
		return;
	cache_cxt = AllocSetContextCreate(CacheMemoryContext, "bv_ml models", ALLOCSET_SMALL_SIZES);
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(CacheEntry);
	ctl.hcxt = cache_cxt;
	cache = hash_create("bv_ml model cache", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Called at the end of every transaction (bv_ml.c). */
void
ml_cache_xact_end(void)
{
	ListCell *lc;

	ml_cache_generation++;
	if (retired == NIL)
		return;
	foreach (lc, retired)
		MemoryContextDelete((MemoryContext) lfirst(lc));
	list_free(retired);
	retired = NIL;
}

/*
 * The registry's answer for "name" or "name@version": the named version,
 * else the production version, else the newest version not archived.
 */
static const char *resolve_sql =
	"SELECT id, xmin, kind, document FROM ml.models "
	" WHERE name = $1 AND ($2 IS NULL OR version = $2) "
	"   AND ($2 IS NOT NULL OR stage <> 'archived') "
	" ORDER BY (stage = 'production') DESC, version DESC LIMIT 1";

MlResolved
ml_resolve(const char *spec)
{
	MlResolved res = {0, NULL};
	const char *at = strrchr(spec, '@');
	char *name;
	Datum args[2];
	char nulls[2] = {' ', 'n'};
	int rc;
	bool isnull;
	int64 id;
	TransactionId xmin;
	CacheEntry *e;
	bool found;
	MemoryContext outer = CurrentMemoryContext;

	cache_init();
	if (at != NULL)
	{
		char *end;
		long v;

		errno = 0;
		v = strtol(at + 1, &end, 10);
		if (at[1] == '\0' || *end != '\0' || errno != 0 || v < 1 || v > PG_INT32_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid model version in \"%.64s\"", spec),
					 errhint("Name a model as \"name\" or \"name@version\" with a positive version.")));
		name = pnstrdup(spec, at - spec);
		args[1] = Int32GetDatum((int32) v);
		nulls[1] = ' ';
	}
	else
	{
		name = pstrdup(spec);
		args[1] = (Datum) 0;
	}
	args[0] = CStringGetTextDatum(name);

	SPI_connect();
	if (resolve_plan == NULL)
	{
		Oid types[2] = {TEXTOID, INT4OID};
		SPIPlanPtr p = SPI_prepare(resolve_sql, 2, types);

		if (p == NULL)
			elog(ERROR, "bv_ml: cannot prepare the model lookup: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		resolve_plan = p;
	}
	rc = SPI_execute_plan(resolve_plan, args, nulls, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "bv_ml: model lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%.64s\" does not exist", spec),
				 errhint("List the registered models with SELECT name, version, stage FROM ml.models.")));

	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	e = hash_search(cache, &id, HASH_ENTER, &found);
	if (!found)
	{
		e->cxt = NULL;
		e->model = NULL;
		e->xmin = InvalidTransactionId;
	}
	if (e->model == NULL || e->xmin != xmin)
	{
		char *kind = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		Jsonb *doc = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
		MemoryContext cxt;
		MemoryContext old;
		MlModel *m;

		/* parse under the statement's context: an error frees it all */
		cxt = AllocSetContextCreate(outer, "bv_ml model", ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(cxt);
		m = ml_parse_model(ml_kind_from_text(kind), doc);
		MemoryContextSwitchTo(old);
		MemoryContextSetParent(cxt, cache_cxt);
		if (e->cxt != NULL)
		{
			MemoryContext oldr = MemoryContextSwitchTo(cache_cxt);

			retired = lappend(retired, e->cxt);
			MemoryContextSwitchTo(oldr);
		}
		e->cxt = cxt;
		e->model = m;
		e->xmin = xmin;
	}
	SPI_finish();

	res.id = id;
	res.model = e->model;
	return res;
}
