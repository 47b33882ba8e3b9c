/*-------------------------------------------------------------------------
 *
 * write_floor_trigger.c
 *	  The least an AFTER row trigger can do to write an audit record:
 *	  bench/audit.sh's "write_floor" variant.
 *
 * bench-audit builds it with PGXS into its own output directory and loads
 * it by path into the throw-away cluster, next to bv_audit.stamp()'s BEFORE
 * trigger, as an AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW trigger
 * whose argument names a plain table shaped like a bv_audit audit table
 * (the same columns, the same history index).  For every row it writes one
 * record there the cheapest way PostgreSQL offers: heap_insert() and
 * index_insert(), the row image copied by column name, a counter for
 * audit_id, a constant actor and operation, the transaction's id and start
 * time, and NULL for everything else (no request context, no changed
 * columns).  It keeps its column mapping in static variables, built at the
 * first row and never invalidated, and checks nothing: a lower bound on
 * what any implementation of bv_audit's record write costs under
 * bv_audit's trigger structure, not something to run anywhere else.  Not
 * part of any extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

PG_MODULE_MAGIC;

/* What each column of the target gets. */
#define FILL_NULL  (-1)
#define FILL_ID    (-2)
#define FILL_OP    (-3)
#define FILL_XID   (-4)
#define FILL_ACTOR (-5)
#define FILL_TS    (-6)

static Oid target_oid = InvalidOid;
static int target_natts;
static int *fill; /* per target column: FILL_* or a source attnum */
static int nindexes;
static Oid *index_oids;
static int *index_natts; /* key and INCLUDE columns */
static AttrNumber (*index_attno)[INDEX_MAX_KEYS];
static int64 next_id = 1;
static Datum actor_text;
static Datum op_text[3];

static void
build_mapping(Relation src, const char *target_name)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	List *names = stringToQualifiedNameList(target_name);
	Relation target;
	TupleDesc tdesc, sdesc = RelationGetDescr(src);
	List *indexoids;
	ListCell *lc;
	int a, s, k;
	static const struct
	{
		const char *name;
		int fill;
	} meta[] = {{"audit_id", FILL_ID},
				{"audit_op", FILL_OP},
				{"audit_xid", FILL_XID},
				{"audit_actor", FILL_ACTOR},
				{"audit_ts", FILL_TS}};

	target = table_openrv(makeRangeVarFromNameList(names), RowExclusiveLock);
	tdesc = RelationGetDescr(target);
	target_natts = tdesc->natts;
	fill = palloc(sizeof(int) * target_natts);
	for (a = 0; a < target_natts; a++)
	{
		const char *name = NameStr(TupleDescAttr(tdesc, a)->attname);

		fill[a] = FILL_NULL;
		for (k = 0; k < lengthof(meta); k++)
			if (strcmp(name, meta[k].name) == 0)
				fill[a] = meta[k].fill;
		for (s = 0; fill[a] == FILL_NULL && s < sdesc->natts; s++)
			if (!TupleDescAttr(sdesc, s)->attisdropped &&
				strcmp(name, NameStr(TupleDescAttr(sdesc, s)->attname)) == 0)
				fill[a] = s + 1;
	}

	indexoids = RelationGetIndexList(target);
	nindexes = list_length(indexoids);
	index_oids = palloc(sizeof(Oid) * Max(nindexes, 1));
	index_natts = palloc(sizeof(int) * Max(nindexes, 1));
	index_attno = palloc(sizeof(*index_attno) * Max(nindexes, 1));
	k = 0;
	foreach (lc, indexoids)
	{
		Relation irel = index_open(lfirst_oid(lc), RowExclusiveLock);

		index_oids[k] = RelationGetRelid(irel);
		index_natts[k] = irel->rd_index->indnatts;
		for (a = 0; a < index_natts[k]; a++)
			index_attno[k][a] = irel->rd_index->indkey.values[a];
		index_close(irel, NoLock);
		k++;
	}

	actor_text = CStringGetTextDatum("bench");
	op_text[0] = CStringGetTextDatum("I");
	op_text[1] = CStringGetTextDatum("U");
	op_text[2] = CStringGetTextDatum("D");
	target_oid = RelationGetRelid(target);
	table_close(target, NoLock);
	MemoryContextSwitchTo(old);
}

PG_FUNCTION_INFO_V1(bench_write_floor_trigger);

Datum
bench_write_floor_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc sdesc;
	HeapTuple image, record;
	Relation target;
	Datum *svals, *values;
	bool *snulls, *nulls;
	int op, a, i, k;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("bench_write_floor_trigger() must be an AFTER row trigger with one argument, the target table")));

	if (!OidIsValid(target_oid))
		build_mapping(trigdata->tg_relation, trigdata->tg_trigger->tgargs[0]);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		op = 0, image = trigdata->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		op = 1, image = trigdata->tg_newtuple;
	else
		op = 2, image = trigdata->tg_trigtuple;

	sdesc = RelationGetDescr(trigdata->tg_relation);
	svals = palloc(sizeof(Datum) * sdesc->natts);
	snulls = palloc(sizeof(bool) * sdesc->natts);
	heap_deform_tuple(image, sdesc, svals, snulls);

	values = palloc(sizeof(Datum) * target_natts);
	nulls = palloc(sizeof(bool) * target_natts);
	for (a = 0; a < target_natts; a++)
	{
		nulls[a] = false;
		switch (fill[a])
		{
			case FILL_NULL:
				values[a] = (Datum) 0;
				nulls[a] = true;
				break;
			case FILL_ID:
				values[a] = Int64GetDatum(next_id++);
				break;
			case FILL_OP:
				values[a] = op_text[op];
				break;
			case FILL_XID:
				values[a] = FullTransactionIdGetDatum(GetTopFullTransactionId());
				break;
			case FILL_ACTOR:
				values[a] = actor_text;
				break;
			case FILL_TS:
				values[a] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
				break;
			default:
				values[a] = svals[fill[a] - 1];
				nulls[a] = snulls[fill[a] - 1];
				break;
		}
	}

	target = table_open(target_oid, RowExclusiveLock);
	record = heap_form_tuple(RelationGetDescr(target), values, nulls);
	heap_insert(target, record, GetCurrentCommandId(true), 0, NULL);
	for (i = 0; i < nindexes; i++)
	{
		Relation irel = index_open(index_oids[i], RowExclusiveLock);
		IndexInfo *ii = makeIndexInfo(index_natts[i], irel->rd_index->indnkeyatts,
									  irel->rd_rel->relam, NIL, NIL, irel->rd_index->indisunique,
									  irel->rd_index->indnullsnotdistinct, true, false);
		Datum ivalues[INDEX_MAX_KEYS];
		bool inulls[INDEX_MAX_KEYS];

		for (k = 0; k < index_natts[i]; k++)
		{
			ivalues[k] = values[index_attno[i][k] - 1];
			inulls[k] = nulls[index_attno[i][k] - 1];
		}
		index_insert(irel, ivalues, inulls, &record->t_self, target,
					 irel->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, ii);
		index_close(irel, NoLock);
	}
	table_close(target, NoLock);
	return PointerGetDatum(NULL);
}
