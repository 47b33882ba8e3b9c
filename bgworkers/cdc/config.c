/*-------------------------------------------------------------------------
 *
 * config.c
 *	  bv_cdc's configuration, read from its tables with SPI.
 *
 * Sinks (bv_cdc.sinks) and routes (bv_cdc.routes) are ordinary tables, so
 * configuration is transactional and survives restarts.  The worker reads
 * them whole into a CdcConfig when it starts and whenever the config
 * generation in shared memory moves (a commit that changed them, see
 * bv_cdc.c).  Lookups by table are cached in the config's hash table: which
 * routes apply to "schema.table", their topics, and the table's live
 * columns (for naming unchanged TOAST columns), read from the catalog on
 * first use and forgotten on relcache invalidation.
 *
 * Every SPI batch is one of batch.c's (pg_cron's shape).  Only the worker
 * calls this.  Nothing here names a sink kind: what differs by kind (how a
 * topic template is expanded) is declared in the kind's CdcSinkOps.
 *
 * Memory: a CdcConfig and everything it points to live in its own context
 * (a child of the worker's long-lived context); cdc_config_free() deletes it
 * in one go.  SPI results are copied out before SPI_finish.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "cdc.h"
#include "kinds.h"
#include "bv_common.h"

static bool columns_stale = false;

static void cdc_config_invalidate_tables(CdcConfig *cfg);
static bool relcache_callback_registered = false;

static void
cdc_relcache_callback(Datum arg, Oid relid)
{
	columns_stale = true;
}

static bool
extension_exists_spi(void)
{
	int rc = SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'bv_cdc'", true, 1);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/*
 * cdc_extension_exists
 *		Is the bv_cdc extension installed in this database?  Also the
 *		worker's periodic transaction, in which relcache invalidations
 *		arrive.
 */
bool
cdc_extension_exists(void)
{
	bool exists;

	cdc_begin_batch("bv_cdc: checking the extension");
	exists = extension_exists_spi();
	cdc_end_batch();
	return exists;
}

static int
ops_from_list(List *ops)
{
	ListCell *lc;
	int bits = 0;

	if (ops == NIL)
		return CDC_OP_ALL;
	foreach (lc, ops)
	{
		const char *o = lfirst(lc);

		bits |= strcmp(o, "c") == 0   ? CDC_OP_C
				: strcmp(o, "u") == 0 ? CDC_OP_U
				: strcmp(o, "d") == 0 ? CDC_OP_D
				: strcmp(o, "t") == 0 ? CDC_OP_T
				: strcmp(o, "r") == 0 ? CDC_OP_R
									  : 0;
	}
	return bits;
}

/*
 * A route's options object (validated by bv_cdc.add_route): qos, retain,
 * on_dead_letter.  Read with the JSON lexer's field extraction; anything
 * missing keeps its default.
 */
static void
route_options(CdcRoute *r, const char *json)
{
	char *v;
	JsonTokenType t;

	r->qos = 1;
	r->retain = false;
	r->hold_key = false;
	r->return_retry = false;
	if (json == NULL)
		return;
	if (bv_json_top_field(json, "qos", &v, &t) == JSON_SUCCESS && v != NULL &&
		t == JSON_TOKEN_NUMBER)
		r->qos = Max(0, Min(2, atoi(v)));
	if (bv_json_top_field(json, "retain", &v, &t) == JSON_SUCCESS && v != NULL)
		r->retain = t == JSON_TOKEN_TRUE;
	if (bv_json_top_field(json, "on_dead_letter", &v, &t) == JSON_SUCCESS && v != NULL)
		r->hold_key = strcmp(v, "hold") == 0;
	if (bv_json_top_field(json, "on_return", &v, &t) == JSON_SUCCESS && v != NULL)
		r->return_retry = strcmp(v, "retry") == 0;
}

/* Give each sink a statistics slot: its old one if it had one. */
static void
assign_stats_slots(CdcConfig *cfg)
{
	bool used[BV_CDC_MAX_SINKS] = {false};
	int i, j;

	SpinLockAcquire(&cdc_shared->mutex);
	for (i = 0; i < cfg->nsinks; i++)
	{
		cfg->sinks[i].stats_slot = -1;
		for (j = 0; j < BV_CDC_MAX_SINKS; j++)
			if (cdc_shared->sinks[j].in_use && strcmp(cdc_shared->sinks[j].name, cfg->sinks[i].name) == 0)
			{
				cfg->sinks[i].stats_slot = j;
				used[j] = true;
				break;
			}
	}
	for (j = 0; j < BV_CDC_MAX_SINKS; j++)
		if (!used[j] && cdc_shared->sinks[j].in_use)
			memset(&cdc_shared->sinks[j], 0, sizeof(CdcSinkStats));
	for (i = 0; i < cfg->nsinks; i++)
	{
		if (cfg->sinks[i].stats_slot >= 0)
			continue;
		for (j = 0; j < BV_CDC_MAX_SINKS; j++)
			if (!cdc_shared->sinks[j].in_use)
			{
				memset(&cdc_shared->sinks[j], 0, sizeof(CdcSinkStats));
				cdc_shared->sinks[j].in_use = true;
				strlcpy(cdc_shared->sinks[j].name, cfg->sinks[i].name, NAMEDATALEN);
				strlcpy(cdc_shared->sinks[j].state, "idle", sizeof(cdc_shared->sinks[j].state));
				cfg->sinks[i].stats_slot = j;
				break;
			}
	}
	SpinLockRelease(&cdc_shared->mutex);
}

/*
 * cdc_config_load
 *		Read sinks and routes.  NULL when the extension is not installed.
 *		The generation is read before the tables, so a change committed
 *		meanwhile triggers another load.
 */
CdcConfig *
cdc_config_load(MemoryContext parent)
{
	CdcConfig *cfg;
	MemoryContext cxt, old;
	uint64 gen = pg_atomic_read_u64(&cdc_shared->config_generation);
	HASHCTL ctl;
	uint64 i;
	int n;

	if (!relcache_callback_registered)
	{
		CacheRegisterRelcacheCallback(cdc_relcache_callback, (Datum) 0);
		relcache_callback_registered = true;
	}

	cdc_begin_batch("bv_cdc: loading configuration");
	if (!extension_exists_spi())
	{
		cdc_end_batch();
		return NULL;
	}

	cxt = AllocSetContextCreate(parent, "bv_cdc config", ALLOCSET_DEFAULT_SIZES);
	cfg = MemoryContextAllocZero(cxt, sizeof(CdcConfig));
	cfg->cxt = cxt;
	cfg->generation = gen;

	if (SPI_execute("SELECT name, kind, config, paused FROM bv_cdc.sinks ORDER BY name", true, 0) !=
		SPI_OK_SELECT)
		elog(ERROR, "could not read bv_cdc.sinks");
	old = MemoryContextSwitchTo(cxt);
	n = Min((int) SPI_processed, BV_CDC_MAX_SINKS);
	if ((int) SPI_processed > BV_CDC_MAX_SINKS)
		ereport(WARNING, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						  errmsg("bv_cdc supports at most %d sinks; the others are ignored",
								 BV_CDC_MAX_SINKS)));
	cfg->sinks = palloc0(sizeof(CdcSink) * Max(n, 1));
	cfg->nsinks = n;
	for (i = 0; i < (uint64) n; i++)
	{
		HeapTuple tup = SPI_tuptable->vals[i];
		TupleDesc td = SPI_tuptable->tupdesc;
		CdcSink *s = &cfg->sinks[i];
		bool isnull;
		Datum conf;

		s->name = SPI_getvalue(tup, td, 1);
		s->kind = SPI_getvalue(tup, td, 2);
		s->config_json = SPI_getvalue(tup, td, 3);
		conf = SPI_getbinval(tup, td, 3, &isnull);
		if (!isnull)
			cdc_jsonb_to_properties(DatumGetJsonbP(conf), &s->conf_keys, &s->conf_values);
		s->paused = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
		s->ops = cdc_sink_ops(s->kind);
		s->txn_topic = (char *) cdc_property(s->conf_keys, s->conf_values, "bv.transaction_topic",
											 NULL);
	}
	MemoryContextSwitchTo(old);

	/* options through to_jsonb: readable before and after ALTER EXTENSION UPDATE */
	if (SPI_execute("SELECT id, table_pattern, sink, topic_template, include_columns, "
					"exclude_columns, operations, (to_jsonb(r) -> 'options')::text, "
					"to_jsonb(r) ->> 'created_by' "
					"FROM bv_cdc.routes r ORDER BY id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read bv_cdc.routes");
	old = MemoryContextSwitchTo(cxt);
	cfg->routes = palloc0(sizeof(CdcRoute) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple tup = SPI_tuptable->vals[i];
		TupleDesc td = SPI_tuptable->tupdesc;
		CdcRoute *r = &cfg->routes[cfg->nroutes];
		char *sink = SPI_getvalue(tup, td, 3);
		bool isnull;
		int j;
		Datum d;

		r->sink = -1;
		for (j = 0; j < cfg->nsinks; j++)
			if (strcmp(cfg->sinks[j].name, sink) == 0)
				r->sink = j;
		if (r->sink < 0)
			continue; /* its sink is beyond the limit */
		r->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		r->pattern = SPI_getvalue(tup, td, 2);
		r->topic_template = SPI_getvalue(tup, td, 4);
		d = SPI_getbinval(tup, td, 5, &isnull);
		r->include_columns = cdc_text_array_to_list(d, isnull, false);
		d = SPI_getbinval(tup, td, 6, &isnull);
		r->exclude_columns = cdc_text_array_to_list(d, isnull, false);
		d = SPI_getbinval(tup, td, 7, &isnull);
		r->ops = ops_from_list(cdc_text_array_to_list(d, isnull, false));
		route_options(r, SPI_getvalue(tup, td, 8));
		r->key_topic = strstr(r->topic_template, "{key}") != NULL;
		r->owner = SPI_getvalue(tup, td, 9);
		cfg->nroutes++;
	}
	MemoryContextSwitchTo(old);
	cdc_end_batch();

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(((CdcTableRoutes *) 0)->key);
	ctl.entrysize = sizeof(CdcTableRoutes);
	ctl.hcxt = cxt;
	cfg->tables = hash_create("bv_cdc tables", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	assign_stats_slots(cfg);
	return cfg;
}

void
cdc_config_free(CdcConfig *cfg)
{
	if (cfg != NULL)
		MemoryContextDelete(cfg->cxt);
}

/*
 * cdc_glob_match
 *		Shell-style match of s against pattern: '*' any run, '?' one char.
 */
static bool
cdc_glob_match(const char *pattern, const char *s)
{
	const char *star = NULL, *mark = NULL;

	while (*s)
	{
		if (*pattern == '?' || *pattern == *s)
		{
			pattern++;
			s++;
		}
		else if (*pattern == '*')
		{
			star = pattern++;
			mark = s;
		}
		else if (star)
		{
			pattern = star + 1;
			s = ++mark;
		}
		else
			return false;
	}
	while (*pattern == '*')
		pattern++;
	return *pattern == '\0';
}

/*
 * The topic for a table: {schema} and {table} replaced, as the sink kind's
 * topic style says (CdcTopicStyle, sink.h).  Names: any character Kafka does
 * not allow becomes _, and the length is capped.  Levels (MQTT, NATS
 * subjects): the template is kept (levels, and {key}, which is filled in per
 * event); in the names, the characters the kind reserves become _.
 */
static char *
expand_topic(const char *tmpl, const char *schema, const char *table, const CdcSinkOps *ops)
{
	StringInfoData buf;
	const char *p;
	int i;

	initStringInfo(&buf);
	for (p = tmpl; *p; p++)
	{
		const char *name = NULL;

		if (strncmp(p, "{schema}", 8) == 0)
		{
			name = schema;
			p += 7;
		}
		else if (strncmp(p, "{table}", 7) == 0)
		{
			name = table;
			p += 6;
		}
		if (name == NULL)
			appendStringInfoChar(&buf, *p);
		else if (ops->topic_style == CDC_TOPIC_LEVELS)
			for (; *name; name++)
				appendStringInfoChar(&buf, strchr(ops->topic_reserved, *name) != NULL ? '_'
																					  : *name);
		else
			appendStringInfoString(&buf, name);
	}
	if (ops->topic_style != CDC_TOPIC_NAME)
		return buf.data;
	for (i = 0; i < buf.len; i++)
	{
		char c = buf.data[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '.' || c == '_' || c == '-'))
			buf.data[i] = '_';
	}
	if (buf.len > 249)
		buf.data[249] = '\0';
	return buf.data;
}

/*
 * May the role that added a route SELECT every row of the table
 * (bv_cdc.may_publish: SELECT, and no row-level security hiding rows from
 * it)?  A table that no longer
 * exists (a change replayed after DROP TABLE) is let through: add_route
 * checked the tables that existed then; a role that no longer exists may
 * nothing.  Runs its own transaction (the worker, between messages).
 */
static bool
owner_may_select(const char *owner, const char *schema, const char *table)
{
	MemoryContext outer = CurrentMemoryContext;
	Oid argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum args[3];
	volatile bool ok = false;

	PG_TRY();
	{
		bool isnull;

		cdc_begin_batch("bv_cdc: checking a route's privileges");
		args[0] = CStringGetTextDatum(owner);
		args[1] = CStringGetTextDatum(schema);
		args[2] = CStringGetTextDatum(table);
		if (SPI_execute_with_args(
				"SELECT CASE WHEN c.oid IS NULL THEN true WHEN r.oid IS NULL THEN false "
				"ELSE bv_cdc.may_publish(r.oid, c.oid) END "
				"FROM (SELECT pg_catalog.to_regclass(pg_catalog.quote_ident($2) || '.' || "
				"pg_catalog.quote_ident($3)) AS oid) c "
				"LEFT JOIN pg_catalog.pg_roles r ON r.rolname = $1",
				3, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not check the privileges of role \"%s\"", owner);
		ok = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
			 !isnull;
		cdc_end_batch();
	}
	PG_CATCH();
	{
		char *msg = cdc_batch_failed(outer);

		ereport(WARNING, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						  errmsg("bv_cdc could not check the privileges of role \"%s\" on %s.%s: %s",
								 owner, schema, table, msg)));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	return ok;
}

/*
 * cdc_config_table
 *		The routes of one table (cached).  Never a table of an internal
 *		schema, and only routes whose role may SELECT the table.
 */
CdcTableRoutes *
cdc_config_table(CdcConfig *cfg, const char *schema, const char *table)
{
	char key[2 * NAMEDATALEN + 2];
	CdcTableRoutes *tr;
	bool found;

	if (columns_stale)
	{
		cdc_config_invalidate_tables(cfg);
		columns_stale = false;
	}
	snprintf(key, sizeof(key), "%s.%s", schema, table);
	tr = hash_search(cfg->tables, key, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(cfg->cxt);
		int *matched = palloc(sizeof(int) * Max(cfg->nroutes, 1));
		int nmatched = 0;
		int i;

		tr->nroutes = 0;
		tr->routes = palloc(sizeof(int) * Max(cfg->nroutes, 1));
		tr->topics = palloc(sizeof(char *) * Max(cfg->nroutes, 1));
		tr->natts = -1;
		tr->attnames = NULL;
		MemoryContextSwitchTo(old);
		if (!cdc_internal_schema(schema))
			for (i = 0; i < cfg->nroutes; i++)
				if (cdc_glob_match(cfg->routes[i].pattern, key))
				{
					const char *owner = cfg->routes[i].owner;

					if (owner != NULL && !owner_may_select(owner, schema, table))
					{
						ereport(WARNING,
								(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
								 errmsg("bv_cdc does not publish %s through route " INT64_FORMAT
										": role \"%s\" that added it cannot SELECT it",
										key, cfg->routes[i].id, owner),
								 errhint("Grant SELECT on the table to that role, or drop the "
										 "route.")));
						continue;
					}
					matched[nmatched++] = i;
				}
		old = MemoryContextSwitchTo(cfg->cxt);
		for (i = 0; i < nmatched; i++)
		{
			tr->routes[tr->nroutes] = matched[i];
			tr->topics[tr->nroutes] =
				expand_topic(cfg->routes[matched[i]].topic_template, schema, table,
							 cfg->sinks[cfg->routes[matched[i]].sink].ops);
			tr->nroutes++;
		}
		pfree(matched);
		MemoryContextSwitchTo(old);
	}
	return tr;
}

/* Forget the cached column lists (a relation changed). */
static void
cdc_config_invalidate_tables(CdcConfig *cfg)
{
	HASH_SEQ_STATUS st;
	CdcTableRoutes *tr;

	if (cfg == NULL)
		return;
	hash_seq_init(&st, cfg->tables);
	while ((tr = hash_seq_search(&st)) != NULL)
		tr->natts = -1;
}
