/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  bv_audit.capture_trigger(): write the mirrored audit row of a change.
 *
 * bv_audit.enable(tbl) creates an audit table that mirrors the table's
 * columns (minus the excluded ones) behind nine metadata columns, and
 * installs this function as an AFTER INSERT OR UPDATE OR DELETE row trigger
 * and an AFTER TRUNCATE statement trigger.  Its one argument is the table's
 * id in bv_audit.tracked.  The record holds the row image after INSERT and
 * UPDATE and before DELETE (what a compliance reader needs: every version
 * the row ever had, and its last version when it went away), the names of
 * the columns an UPDATE changed (excluded ones included, their values never
 * copied), and who/when/where from context.c.
 *
 * Per-table state: the first row a backend sees for a table builds an entry
 * in a hash table keyed by the table's OID: the audit table, its owner, the
 * positions of the mirrored columns, the partition of the current month and
 * a saved SPI plan of the INSERT.  Building it reads bv_audit.tracked,
 * bv_audit.columns and pg_inherits through SPI; after that a row costs no
 * catalog access and no JSON.
 *
 * Two ways to write a record (measured in docs/adr/0011-audit-capture-path.md):
 *
 *	fast	heap_insert() straight into the month's partition and
 *			index_insert() into each of its indexes, the way
 *			CatalogTupleInsert writes: no executor state, no slot, no SPI,
 *			no partition routing.  The index entries are formed from the
 *			record's own values through the attribute numbers cached in the
 *			entry.  The partition is opened and closed per record (see
 *			insert_direct()).  Used when the partition of the record's
 *			month exists, is a heap, has no insert triggers, CHECK
 *			constraints or generated columns of its own, its indexes are
 *			plain column indexes (no expressions, predicates, exclusion or
 *			deferred uniqueness), and every mirrored column has the same type
 *			and typmod as the tracked column (for a domain: as its base type)
 *			or is the text column of an enum (or enum array), whose text the
 *			fast path renders with the type's built-in output function.
 *	slow	the saved SPI plan of INSERT INTO <audit table>: partition
 *			routing (the default partition when the month's is missing),
 *			type coercion, and whatever an administrator added to the audit
 *			table are all handled by the executor.
 *
 * The audit record's time (audit_ts) is the clock when the record is
 * captured, GetCurrentTimestamp() in this AFTER trigger: the statement has
 * changed the row and holds its lock (until its transaction ends), so a
 * later writer of the same row (same key) captures after this transaction
 * ended, hence at a later time and with a higher audit_id.  For each key,
 * audit_ts is therefore non-decreasing in audit_id order, and as_of(t) never
 * shows a version that had not been written by t (ADR 0013, docs
 * "Time").  Records of one transaction, even of one statement, carry
 * different times; a transaction can span a month boundary, so the entry
 * remembers the month it was built for and is rebuilt when a record of
 * another month comes.
 * The relcache callback (bv_audit.c) marks an entry invalid when the table,
 * its audit table or the month's partition changes (ALTER TABLE, the event trigger's
 * mirroring, a new partition) or when enable()/disable() call
 * bv_audit._invalidate(); the next row rebuilds it.
 *
 * Memory: entries and their arrays live in a context under
 * CacheMemoryContext that is never reset; an invalidated entry's arrays are
 * freed when it is rebuilt.  Plans are SPI_keepplan'ed and freed on
 * rebuild.  Per-row work happens in the trigger's per-tuple context, which
 * the trigger manager resets after every row; the fast path connects to
 * SPI only when it has to build an entry.
 *
 * Privileges: the slow path's INSERT runs as the audit table's owner, the
 * way the referential-integrity triggers run as the referenced table's
 * owner; the fast path is bv_audit writing its own table and checks no
 * privilege.  Either way a writer needs no privilege on the audit table,
 * which nobody but the owner may write (and nobody, owner included, may
 * UPDATE or DELETE; guard.c).
 *
 * Concurrency: audit rows are plain inserts into the partition of the
 * record's time; writers of the same or different tables take
 * no heavyweight lock beyond RowExclusiveLock on the month's partition (the
 * slow path: on the audit table too) and its indexes, and never wait on
 * each other.  audit_id comes from audit_id.c: a spinlock in shared memory
 * for the id, the sequence only once per block of ids.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/execnodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "bv_audit.h"

/* Parameters of the audit INSERT that precede the mirrored columns. */
#define NMETA_PARAMS 8

/* One index of the month's partition, as the fast path writes it. */
typedef struct CaptureIndex
{
	Oid indexoid;
	bool unique;
	int natts;                        /* key and INCLUDE columns */
	AttrNumber attno[INDEX_MAX_KEYS]; /* their partition attnums */
} CaptureIndex;

typedef struct CaptureEntry
{
	Oid relid; /* hash key: the tracked table */
	bool valid;
	int32 tracked_id;
	Oid audit_relid;
	Oid audit_owner;
	int nmirror;              /* mirrored columns */
	AttrNumber *mirror;       /* their attnums in the tracked table */
	int nlive;                /* live columns compared for audit_changed */
	AttrNumber *live;         /* their attnums */
	Datum *live_names;        /* their names, as text */
	int nchanged;             /* the last audit_changed built: how many names, */
	int *changed;             /* which of live[] (nlive slots), */
	ArrayType *changed_array; /* and the array itself, or NULL */
	SPIPlanPtr plan;          /* INSERT INTO audit table, saved */
	int nkey;                 /* primary key columns (bv_audit.tracked.pk_columns) */
	AttrNumber *key;          /* their attnums in the tracked table */
	SPIPlanPtr keyplan;       /* SELECT 1 FROM the table WHERE key = $n, saved; built when needed */
	Oid seq_relid;            /* bv_audit.audit_id_seq */
	TimestampTz month_lo;     /* the month this entry was built for */
	TimestampTz month_hi;
	Oid part_relid;                        /* its partition, when the fast path applies */
	int part_natts;                        /* attributes of the partition */
	AttrNumber meta_attno[BV_AUDIT_NMETA]; /* partition attnums, audit_id.. */
	AttrNumber *mirror_attno;              /* partition attnums of mirror[] */
	FmgrInfo *mirror_out;                  /* output function when stored as text, */
	bool *mirror_text;                     /* for enums (and arrays of them) */
	int nindexes;                          /* indexes of the partition */
	CaptureIndex *indexes;
} CaptureEntry;

static HTAB *capture_cache = NULL;
static MemoryContext capture_cxt = NULL;

/* audit_op values, as text, built once. */
static Datum op_text[4];
static const char *const op_names[4] = {"I", "U", "D", "T"};

void
bv_audit_capture_invalidate(Oid relid)
{
	HASH_SEQ_STATUS status;
	CaptureEntry *entry;

	if (capture_cache == NULL)
		return;
	/* Entries are few; the audit table is not the key, so scan them all. */
	hash_seq_init(&status, capture_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (!OidIsValid(relid) || entry->relid == relid ||
			entry->audit_relid == relid || entry->part_relid == relid)
			entry->valid = false;
	}
}

static void
free_entry_state(CaptureEntry *entry)
{
	if (entry->mirror)
		pfree(entry->mirror);
	if (entry->live)
		pfree(entry->live);
	if (entry->live_names)
		pfree(entry->live_names);
	if (entry->changed)
		pfree(entry->changed);
	if (entry->changed_array)
		pfree(entry->changed_array);
	entry->changed = NULL;
	entry->changed_array = NULL;
	entry->nchanged = 0;
	if (entry->plan)
		SPI_freeplan(entry->plan);
	if (entry->keyplan)
		SPI_freeplan(entry->keyplan);
	if (entry->key)
		pfree(entry->key);
	entry->keyplan = NULL;
	entry->key = NULL;
	entry->nkey = 0;
	if (entry->mirror_attno)
		pfree(entry->mirror_attno);
	if (entry->mirror_out)
		pfree(entry->mirror_out);
	if (entry->mirror_text)
		pfree(entry->mirror_text);
	entry->mirror_out = NULL;
	entry->mirror_text = NULL;
	if (entry->indexes)
		pfree(entry->indexes);
	entry->mirror_attno = NULL;
	entry->indexes = NULL;
	entry->nindexes = 0;
	entry->part_relid = InvalidOid;
	entry->mirror = entry->live = NULL;
	entry->live_names = NULL;
	entry->plan = NULL;
}

static void
not_mirrored_error(Relation rel, const char *what, const char *column)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("audit table of \"%s\" is out of step with it", RelationGetRelationName(rel)),
			 errdetail("%s \"%s\".", what, column),
			 errhint("Run bv_audit.enable() on the table again to bring its audit table up to date.")));
}

/* The metadata columns, in the order of CaptureEntry's meta_attno[]. */
static const char *const meta_names[BV_AUDIT_NMETA] = {
	"audit_id", "audit_op", "audit_xid", "audit_actor", "audit_ts",
	"audit_app", "audit_client", "audit_trace", "audit_changed"};

/* Attribute number of a live column by name, or 0. */
static AttrNumber
attno_by_name(TupleDesc desc, const char *name)
{
	int a;

	for (a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return 0;
}

/*
 * Record the indexes of the partition for the fast path.  Returns false
 * when one of them needs the executor: expressions, a predicate, an
 * exclusion constraint or deferred uniqueness.  Indexes not yet ready for
 * inserts (CREATE INDEX CONCURRENTLY) are skipped, as the executor skips
 * them; marking them ready invalidates the partition's relcache entry, and
 * with it this entry.
 */
static bool
build_fast_indexes(CaptureEntry *entry, Relation part)
{
	List *indexoids = RelationGetIndexList(part);
	ListCell *lc;
	bool ok = true;

	entry->indexes = MemoryContextAllocZero(capture_cxt,
											sizeof(CaptureIndex) * Max(list_length(indexoids), 1));
	entry->nindexes = 0;
	foreach (lc, indexoids)
	{
		Relation irel = index_open(lfirst_oid(lc), RowExclusiveLock);
		Form_pg_index index = irel->rd_index;
		CaptureIndex *ci = &entry->indexes[entry->nindexes];
		int k;

		if (!index->indisready)
		{
			index_close(irel, NoLock);
			continue;
		}
		if (!heap_attisnull(irel->rd_indextuple, Anum_pg_index_indexprs, NULL) ||
			!heap_attisnull(irel->rd_indextuple, Anum_pg_index_indpred, NULL) ||
			index->indisexclusion || (index->indisunique && !index->indimmediate))
			ok = false;
		ci->indexoid = RelationGetRelid(irel);
		ci->unique = index->indisunique;
		ci->natts = index->indnatts;
		for (k = 0; ok && k < index->indnatts; k++)
		{
			ci->attno[k] = index->indkey.values[k];
			if (ci->attno[k] <= 0)
				ok = false; /* a system column or an expression */
		}
		index_close(irel, NoLock);
		if (!ok)
			break;
		entry->nindexes++;
	}
	list_free(indexoids);
	return ok;
}

/*
 * Whether the fast path may store values of a type as their text: enums and
 * arrays of enums (or of domains over enums), whose text comes from
 * built-in output functions.  Audit tables store them as text so that they
 * never depend on the type (see bv_audit._audit_type()).
 */
static bool
stored_as_text(Oid type)
{
	Oid elem = get_element_type(type);

	if (OidIsValid(elem))
		type = getBaseType(elem);
	return type_is_enum(type);
}

/*
 * Decide whether records of the current transaction's month can be written
 * straight into their partition (see the file comment), and prepare the
 * attribute mapping if so.  Runs inside build_entry()'s SPI connection.
 */
static void
build_fast_path(CaptureEntry *entry, TupleDesc srcdesc, char **mirror_names, TimestampTz ts)
{
	Oid argtypes[2] = {OIDOID, TIMESTAMPTZOID};
	Datum args[2];
	bool isnull;
	Relation part;
	TupleDesc pdesc;
	int i, ret;
	bool ok = true;

	entry->part_relid = InvalidOid;
	entry->seq_relid = get_relname_relid("audit_id_seq", get_namespace_oid("bv_audit", false));
	args[0] = ObjectIdGetDatum(entry->audit_relid);
	args[1] = TimestampTzGetDatum(ts);
	/* Bounds are compared in the text of this session, on both sides. */
	ret = SPI_execute_with_args(
		"SELECT b.lo, b.hi, p.oid FROM "
		"  (SELECT pg_catalog.timezone('UTC', pg_catalog.date_trunc('month', pg_catalog.timezone('UTC', $2))) AS lo, "
		"          pg_catalog.timezone('UTC', pg_catalog.date_trunc('month', pg_catalog.timezone('UTC', $2)) "
		"                                      + pg_catalog.make_interval(months => 1)) AS hi) b "
		"LEFT JOIN LATERAL (SELECT c.oid FROM pg_catalog.pg_inherits i "
		"                   JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
		"                   WHERE i.inhparent = $1 AND c.relkind = 'r' "
		"                     AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = "
		"                         pg_catalog.format('FOR VALUES FROM (%L) TO (%L)', b.lo, b.hi)) p ON true",
		2, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "looking up the audit partition failed: %s", SPI_result_code_string(ret));
	entry->month_lo = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	entry->month_hi = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	entry->part_relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (isnull || !OidIsValid(entry->seq_relid))
	{
		entry->part_relid = InvalidOid;
		return;
	}

	part = table_open(entry->part_relid, RowExclusiveLock);
	pdesc = RelationGetDescr(part);
	if (part->rd_rel->relam != HEAP_TABLE_AM_OID ||
		(part->trigdesc && (part->trigdesc->trig_insert_before_row ||
							part->trigdesc->trig_insert_after_row ||
							part->trigdesc->trig_insert_instead_row ||
							part->trigdesc->trig_insert_new_table)) ||
		(pdesc->constr && (pdesc->constr->num_check > 0 ||
						   pdesc->constr->has_generated_stored)))
		ok = false;

	for (i = 0; ok && i < BV_AUDIT_NMETA; i++)
	{
		entry->meta_attno[i] = attno_by_name(pdesc, meta_names[i]);
		if (entry->meta_attno[i] == 0)
			ok = false;
	}
	if (ok)
	{
		entry->mirror_attno = MemoryContextAlloc(capture_cxt,
												 sizeof(AttrNumber) * Max(entry->nmirror, 1));
		entry->mirror_out = MemoryContextAllocZero(capture_cxt, sizeof(FmgrInfo) * Max(entry->nmirror, 1));
		entry->mirror_text = MemoryContextAllocZero(capture_cxt, sizeof(bool) * Max(entry->nmirror, 1));
		for (i = 0; ok && i < entry->nmirror; i++)
		{
			Form_pg_attribute src = TupleDescAttr(srcdesc, entry->mirror[i] - 1);
			AttrNumber pa = attno_by_name(pdesc, mirror_names[i]);
			int32 srcmod = src->atttypmod;
			/* A domain's values are its base type's: audit tables store those. */
			Oid srctype = getBaseTypeAndTypmod(src->atttypid, &srcmod);
			Form_pg_attribute patt = pa > 0 ? TupleDescAttr(pdesc, pa - 1) : NULL;

			if (patt == NULL)
				ok = false;
			else if (patt->atttypid == srctype && patt->atttypmod == srcmod)
				entry->mirror_attno[i] = pa;
			else if (patt->atttypid == TEXTOID && stored_as_text(srctype))
			{
				Oid outfn;
				bool varlena;

				getTypeOutputInfo(srctype, &outfn, &varlena);
				fmgr_info_cxt(outfn, &entry->mirror_out[i], capture_cxt);
				entry->mirror_text[i] = true;
				entry->mirror_attno[i] = pa;
			}
			else
				ok = false; /* needs the executor's coercion */
		}
	}
	if (ok)
		ok = build_fast_indexes(entry, part);
	entry->part_natts = pdesc->natts;
	table_close(part, NoLock);
	if (!ok)
		entry->part_relid = InvalidOid;
}

/*
 * Write one record straight into the month's partition: heap_insert() and
 * index_insert(), no executor.  values/nulls are in the partition's
 * attribute order.  Returns false, having written nothing, when the
 * partition went away or the entry was invalidated while we waited for the
 * lock; the caller rebuilds the entry and tries again.
 *
 * The partition is opened and closed for each record: a relation held open
 * past the statement would make ALTER TABLE and TRUNCATE of the audit table
 * later in the same transaction fail (the event trigger's mirroring among
 * them); the lock, as always, stays until the transaction ends.  Opening an
 * already locked relation is a hash lookup.
 *
 * Only the partition is locked, not the partitioned audit table, as when a
 * client inserts into a partition by name.  Every DDL that could change what
 * the entry caches about the partition (its columns, indexes, triggers,
 * constraints; ALTER TABLE of the audit table recurses to it; DETACH and
 * DROP) takes a lock on the partition that conflicts with ours, and its
 * invalidation reaches the entry (part_relid) when our lock is granted.
 * The parent's lock bought nothing beyond that, and cost a lock and its
 * release per transaction.
 */
static bool
insert_direct(CaptureEntry *entry, Datum *values, bool *nulls)
{
	Relation part;
	HeapTuple tuple;
	int i, k;

	part = try_table_open(entry->part_relid, RowExclusiveLock);
	if (part == NULL)
		return false;
	if (!entry->valid)
	{
		table_close(part, NoLock);
		return false;
	}

	values[entry->meta_attno[0] - 1] = Int64GetDatum(bv_audit_next_id(entry->seq_relid));
	nulls[entry->meta_attno[0] - 1] = false;
	tuple = heap_form_tuple(RelationGetDescr(part), values, nulls);
	heap_insert(part, tuple, GetCurrentCommandId(true), 0, NULL);

	for (i = 0; i < entry->nindexes; i++)
	{
		CaptureIndex *ci = &entry->indexes[i];
		Relation irel = index_open(ci->indexoid, RowExclusiveLock);
		/* What index AMs read of it at insert: no expressions, no predicate. */
		IndexInfo *ii = makeIndexInfo(ci->natts, irel->rd_index->indnkeyatts, irel->rd_rel->relam,
									  NIL, NIL, ci->unique, irel->rd_index->indnullsnotdistinct,
									  true, false);
		Datum ivalues[INDEX_MAX_KEYS];
		bool inulls[INDEX_MAX_KEYS];

		for (k = 0; k < ci->natts; k++)
		{
			ivalues[k] = values[ci->attno[k] - 1];
			inulls[k] = nulls[ci->attno[k] - 1];
		}
		index_insert(irel, ivalues, inulls, &tuple->t_self, part,
					 ci->unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, ii);
		index_close(irel, NoLock);
	}
	table_close(part, NoLock);
	return true;
}

/*
 * Remember the attnums of the primary key columns (bv_audit.tracked.pk_columns,
 * kept in step with renames by the event trigger), so that an UPDATE that
 * changes the key can be recorded as a move (see record_move()).  A key
 * column the table no longer has is left out.
 */
static void
build_key(CaptureEntry *entry, TupleDesc desc, Datum pk, bool pk_null)
{
	Datum *names;
	bool *nulls;
	int n, i;

	entry->key = MemoryContextAlloc(capture_cxt, sizeof(AttrNumber) * Max(desc->natts, 1));
	entry->nkey = 0;
	if (pk_null)
		return;
	deconstruct_array(DatumGetArrayTypeP(pk), TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
	for (i = 0; i < n && entry->nkey < desc->natts; i++)
	{
		AttrNumber a;

		if (nulls[i])
			continue;
		a = attno_by_name(desc, TextDatumGetCString(names[i]));
		if (a > 0)
			entry->key[entry->nkey++] = a;
	}
}

/*
 * Build an entry from bv_audit.tracked and bv_audit.columns.  Runs inside
 * the caller's SPI connection.
 */
/*
 * A tracked table must keep a primary key: records are followed by it, and
 * without one rows with equal old keys would hide each other in as_of()
 * and history().  ALTER TABLE may drop the key and add another in a later
 * command of the same transaction; a row written in between is refused.
 * Deferrable keys count (RelationGetPrimaryKeyIndex() ignores them).
 */
static void
check_primary_key(Relation rel)
{
	List *indexoids = RelationGetIndexList(rel);
	ListCell *lc;
	bool found = false;

	foreach (lc, indexoids)
	{
		HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));

		if (!HeapTupleIsValid(tup))
			continue;
		if (((Form_pg_index) GETSTRUCT(tup))->indisprimary)
			found = true;
		ReleaseSysCache(tup);
		if (found)
			break;
	}
	list_free(indexoids);
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tracked table \"%s\" has no primary key", RelationGetRelationName(rel)),
				 errdetail("bv_audit follows the rows of a tracked table by its primary key."),
				 errhint("Add a primary key (ALTER TABLE ... ADD PRIMARY KEY), or call bv_audit.disable() on the table.")));
}

static void
build_entry(CaptureEntry *entry, Relation rel, int32 tracked_id, TimestampTz ts)
{
	TupleDesc desc = RelationGetDescr(rel);
	Oid argtypes[2] = {INT4OID, OIDOID};
	Datum args[2];
	StringInfoData sql;
	Oid *ptypes;
	int nparams, i, a, ret;
	bool isnull;
	char *audit_name;
	char **mirror_names;
	MemoryContext old;

	check_primary_key(rel);
	free_entry_state(entry);
	entry->tracked_id = tracked_id;
	args[0] = Int32GetDatum(tracked_id);
	args[1] = ObjectIdGetDatum(RelationGetRelid(rel));

	ret = SPI_execute_with_args(
		"SELECT t.audit_relid::pg_catalog.oid, c.relowner, "
		"       pg_catalog.format('%I.%I', n.nspname, c.relname), t.pk_columns::pg_catalog.text[] "
		"FROM bv_audit.tracked t "
		"JOIN pg_catalog.pg_class c ON c.oid = t.audit_relid "
		"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
		"WHERE t.id = $1 AND t.relid = $2 AND t.enabled",
		2, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not tracked by bv_audit", RelationGetRelationName(rel)),
				 errdetail("Its audit trigger names tracking entry %d, which is missing, disabled or belongs to another table.",
						   tracked_id),
				 errhint("Run bv_audit.enable() on the table, or bv_audit.disable() to remove the trigger.")));
	entry->audit_relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	entry->audit_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	audit_name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	build_key(entry, desc,
			  SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull), isnull);

	old = MemoryContextSwitchTo(capture_cxt);
	entry->mirror = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));
	entry->live = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));
	entry->live_names = palloc(sizeof(Datum) * Max(desc->natts, 1));
	entry->changed = palloc(sizeof(int) * Max(desc->natts, 1));
	MemoryContextSwitchTo(old);

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO %s (audit_op, audit_xid, audit_actor, audit_ts, audit_app, "
					 "audit_client, audit_trace, audit_changed",
					 audit_name);
	ptypes = palloc(sizeof(Oid) * (NMETA_PARAMS + desc->natts));
	ptypes[0] = TEXTOID;
	ptypes[1] = XID8OID;
	ptypes[2] = TEXTOID;
	ptypes[3] = TIMESTAMPTZOID;
	ptypes[4] = TEXTOID;
	ptypes[5] = INETOID;
	ptypes[6] = TEXTOID;
	ptypes[7] = TEXTARRAYOID;
	nparams = NMETA_PARAMS;
	mirror_names = palloc(sizeof(char *) * Max(desc->natts, 1));

	/* The mapping of tracked columns to audit columns, by attnum. */
	ret = SPI_execute_with_args(
		"SELECT c.src_attnum, c.audit_column::pg_catalog.text FROM bv_audit.columns c "
		"WHERE c.tracked_id = $1 AND c.src_attnum > 0 ORDER BY c.src_attnum",
		1, argtypes, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading bv_audit.columns failed: %s", SPI_result_code_string(ret));

	entry->nmirror = 0;
	entry->nlive = 0;
	for (a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (att->attisdropped)
			continue;
		old = MemoryContextSwitchTo(capture_cxt);
		entry->live[entry->nlive] = att->attnum;
		entry->live_names[entry->nlive] = CStringGetTextDatum(NameStr(att->attname));
		MemoryContextSwitchTo(old);
		entry->nlive++;
	}
	for (i = 0; i < (int) SPI_processed; i++)
	{
		int attnum = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		char *column = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		Form_pg_attribute att;

		if (attnum > desc->natts)
			not_mirrored_error(rel, "The audit table maps a column the table does not have", column);
		att = TupleDescAttr(desc, attnum - 1);
		if (att->attisdropped)
			continue; /* dropped: its audit column keeps the history */
		mirror_names[entry->nmirror] = column;
		entry->mirror[entry->nmirror++] = attnum;
		appendStringInfo(&sql, ", %s", quote_identifier(column));
		ptypes[nparams++] = att->atttypid;
	}
	appendStringInfoString(&sql, ") VALUES ($1");
	for (i = 2; i <= nparams; i++)
		appendStringInfo(&sql, ", $%d", i);
	appendStringInfoChar(&sql, ')');

	/* Every live column must be mirrored or excluded. */
	{
		Oid checktypes[2] = {INT4OID, OIDOID};

		ret = SPI_execute_with_args(
			"SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_attribute a "
			"JOIN bv_audit.tracked t ON t.id = $1 "
			"WHERE a.attrelid = $2 AND a.attnum > 0 AND NOT a.attisdropped "
			"AND a.attname <> ALL (t.exclude_columns) "
			"AND NOT EXISTS (SELECT 1 FROM bv_audit.columns c "
			"                WHERE c.tracked_id = $1 AND c.src_attnum = a.attnum) "
			"LIMIT 1",
			2, checktypes, args, NULL, true, 1);
		if (ret == SPI_OK_SELECT && SPI_processed > 0)
			not_mirrored_error(rel, "The audit table has no column for",
							   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	}

	entry->plan = SPI_prepare(sql.data, nparams, ptypes);
	if (entry->plan == NULL)
		elog(ERROR, "preparing the audit insert failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(entry->plan) != 0)
		elog(ERROR, "saving the audit insert failed");
	build_fast_path(entry, desc, mirror_names, ts);
	entry->valid = true;
}

/*
 * The entry of a table, built (through SPI) when it is missing, invalidated
 * or of another month than the record's time ts.
 */
static CaptureEntry *
get_entry(Relation rel, int32 tracked_id, TimestampTz ts)
{
	Oid relid = RelationGetRelid(rel);
	CaptureEntry *entry;
	bool found;

	if (capture_cache == NULL)
	{
		HASHCTL ctl;
		int i;

		capture_cxt = AllocSetContextCreate(CacheMemoryContext, "bv_audit capture cache",
											ALLOCSET_SMALL_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CaptureEntry);
		ctl.hcxt = capture_cxt;
		capture_cache = hash_create("bv_audit capture cache", 32, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		for (i = 0; i < 4; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(capture_cxt);

			op_text[i] = CStringGetTextDatum(op_names[i]);
			MemoryContextSwitchTo(old);
		}
	}
	entry = hash_search(capture_cache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		entry->valid = false;
		entry->audit_relid = InvalidOid;
		entry->mirror = entry->live = NULL;
		entry->live_names = NULL;
		entry->changed = NULL;
		entry->changed_array = NULL;
		entry->nchanged = 0;
		entry->plan = NULL;
		entry->key = NULL;
		entry->nkey = 0;
		entry->keyplan = NULL;
		entry->mirror_attno = NULL;
		entry->mirror_out = NULL;
		entry->mirror_text = NULL;
		entry->indexes = NULL;
		entry->nindexes = 0;
		entry->part_relid = InvalidOid;
	}
	if (!entry->valid || entry->tracked_id != tracked_id ||
		ts < entry->month_lo || ts >= entry->month_hi)
	{
		entry->valid = false;
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		build_entry(entry, rel, tracked_id, ts);
		SPI_finish();
	}
	return entry;
}

/*
 * The names of the columns whose value differs between two row versions,
 * given both deformed.  Updates of one table mostly change the same
 * columns, so the last array built is kept in the entry and returned again
 * when the same columns changed (the record's tuple copies it).
 */
static Datum
changed_columns(CaptureEntry *entry, TupleDesc desc, const Datum *oldvals, const bool *oldnulls,
				const Datum *newvals, const bool *newnulls)
{
	int *changed = palloc(sizeof(int) * Max(entry->nlive, 1));
	Datum *names;
	MemoryContext old;
	int n = 0, i;

	for (i = 0; i < entry->nlive; i++)
	{
		int a = entry->live[i] - 1;
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (oldnulls[a] && newnulls[a])
			continue;
		if (oldnulls[a] != newnulls[a] ||
			!datumIsEqual(oldvals[a], newvals[a], att->attbyval, att->attlen))
			changed[n++] = i;
	}
	if (entry->changed_array != NULL && n == entry->nchanged &&
		memcmp(changed, entry->changed, sizeof(int) * n) == 0)
		return PointerGetDatum(entry->changed_array);

	names = palloc(sizeof(Datum) * Max(n, 1));
	for (i = 0; i < n; i++)
		names[i] = entry->live_names[changed[i]];
	if (entry->changed_array != NULL)
		pfree(entry->changed_array);
	old = MemoryContextSwitchTo(capture_cxt);
	entry->changed_array = construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT);
	MemoryContextSwitchTo(old);
	memcpy(entry->changed, changed, sizeof(int) * n);
	entry->nchanged = n;
	return PointerGetDatum(entry->changed_array);
}

static int32
tracked_id_arg(TriggerData *trigdata)
{
	Trigger *trigger = trigdata->tg_trigger;

	if (trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv_audit.capture_trigger() needs exactly one argument"),
				 errhint("Install the trigger with bv_audit.enable(), not by hand.")));
	return pg_strtoint32(trigger->tgargs[0]);
}

/*
 * Write a record through the saved INSERT plan, as the audit table's owner
 * (see the file comment).  values/nulls are the plan's parameters.
 */
static void
insert_spi(CaptureEntry *entry, Datum *values, const char *nulls)
{
	Oid save_userid;
	int save_sec;
	int ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(entry->audit_owner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	ret = SPI_execute_plan(entry->plan, values, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "writing the audit record failed: %s", SPI_result_code_string(ret));
	SPI_finish();
}

/*
 * Whether an UPDATE changed the primary key (binary comparison, as for
 * audit_changed).
 */
static bool
key_changed(const CaptureEntry *entry, TupleDesc desc, const Datum *oldvals, const bool *oldnulls,
			const Datum *newvals, const bool *newnulls)
{
	int i;

	for (i = 0; i < entry->nkey; i++)
	{
		int a = entry->key[i] - 1;
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (oldnulls[a] != newnulls[a])
			return true;
		if (!oldnulls[a] && !datumIsEqual(oldvals[a], newvals[a], att->attbyval, att->attlen))
			return true;
	}
	return false;
}

/*
 * Whether a row with the given key is in the table now, as this statement
 * left it (AFTER row triggers run when the statement is done).  Read as the
 * audit table's owner so that row-level security hides nothing.  The plan is
 * built on first use and kept in the entry.
 */
static bool
key_exists(CaptureEntry *entry, Relation rel, const Datum *vals, const bool *nulls)
{
	Datum args[INDEX_MAX_KEYS];
	char argnulls[INDEX_MAX_KEYS];
	Oid save_userid;
	int save_sec;
	int i, ret;
	bool found;

	if (entry->nkey == 0 || entry->nkey > INDEX_MAX_KEYS)
		return false;
	for (i = 0; i < entry->nkey; i++)
	{
		if (nulls[entry->key[i] - 1])
			return false; /* no row has a NULL key */
		args[i] = vals[entry->key[i] - 1];
		argnulls[i] = ' ';
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (entry->keyplan == NULL)
	{
		TupleDesc desc = RelationGetDescr(rel);
		StringInfoData sql;
		Oid types[INDEX_MAX_KEYS];

		initStringInfo(&sql);
		appendStringInfo(&sql, "SELECT 1 FROM ONLY %s WHERE ",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel)));
		for (i = 0; i < entry->nkey; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, entry->key[i] - 1);

			appendStringInfo(&sql, "%s%s = $%d", i > 0 ? " AND " : "",
							 quote_identifier(NameStr(att->attname)), i + 1);
			types[i] = att->atttypid;
		}
		entry->keyplan = SPI_prepare(sql.data, entry->nkey, types);
		if (entry->keyplan == NULL || SPI_keepplan(entry->keyplan) != 0)
			elog(ERROR, "preparing the key lookup failed: %s", SPI_result_code_string(SPI_result));
	}
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(entry->audit_owner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	ret = SPI_execute_plan(entry->keyplan, args, argnulls, false, 1);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "looking up the old key failed: %s", SPI_result_code_string(ret));
	found = SPI_processed > 0;
	SPI_finish();
	return found;
}

/*
 * Write one record: operation op (0..3 = I, U, D, T), the row image
 * vals/nulls (NULL for TRUNCATE) and, when oldvals is given, audit_changed
 * computed between oldvals and newvals.  If the fast path finds the entry
 * invalidated under it (DDL committed while we waited for a lock), the entry
 * and the record are built again.
 */
static void
write_record(TriggerData *trigdata, int32 tracked_id, const BvAuditContext *ctx, TimestampTz ts, int op,
			 const Datum *vals, const bool *nulls_in, const Datum *oldvals, const bool *oldnulls,
			 const Datum *newvals, const bool *newnulls)
{
	TupleDesc desc = RelationGetDescr(trigdata->tg_relation);
	CaptureEntry *entry;
	Datum meta[NMETA_PARAMS];
	bool metanull[NMETA_PARAMS];
	int i;

	for (;;)
	{
		entry = get_entry(trigdata->tg_relation, tracked_id, ts);

		/* audit_op .. audit_changed, in the order of the INSERT's parameters */
		memset(metanull, 0, sizeof(metanull));
		meta[0] = op_text[op];
		meta[1] = FullTransactionIdGetDatum(GetTopFullTransactionId());
		meta[2] = ctx->actor;
		meta[3] = TimestampTzGetDatum(ts);
		meta[4] = ctx->app;
		metanull[4] = ctx->app_null;
		meta[5] = ctx->client;
		metanull[5] = ctx->client_null;
		meta[6] = ctx->trace;
		metanull[6] = ctx->trace_null;
		if (oldvals != NULL)
			meta[7] = changed_columns(entry, desc, oldvals, oldnulls, newvals, newnulls);
		else
		{
			meta[7] = (Datum) 0;
			metanull[7] = true;
		}

		if (OidIsValid(entry->part_relid))
		{
			/* fast: the values in the partition's attribute order */
			Datum *values = palloc(sizeof(Datum) * entry->part_natts);
			bool *nulls = palloc(sizeof(bool) * entry->part_natts);

			for (i = 0; i < entry->part_natts; i++)
			{
				values[i] = (Datum) 0;
				nulls[i] = true;
			}
			for (i = 0; i < NMETA_PARAMS; i++)
			{
				values[entry->meta_attno[i + 1] - 1] = meta[i];
				nulls[entry->meta_attno[i + 1] - 1] = metanull[i];
			}
			for (i = 0; vals != NULL && i < entry->nmirror; i++)
			{
				int a = entry->mirror[i] - 1;

				if (entry->mirror_text[i] && !nulls_in[a])
					values[entry->mirror_attno[i] - 1] =
						CStringGetTextDatum(OutputFunctionCall(&entry->mirror_out[i], vals[a]));
				else
					values[entry->mirror_attno[i] - 1] = vals[a];
				nulls[entry->mirror_attno[i] - 1] = nulls_in[a];
			}
			if (insert_direct(entry, values, nulls))
				return;
			/* The partition went away or the entry was invalidated: again. */
			entry->valid = false;
			continue;
		}
		else
		{
			/*
			 * slow: the plan's parameters.  The context's values are copied:
			 * the executor may run triggers of the audit table, and through
			 * them statements that read the context anew.
			 */
			int nparams = NMETA_PARAMS + entry->nmirror;
			Datum *values = palloc(sizeof(Datum) * nparams);
			char *nulls = palloc(nparams);

			for (i = 0; i < NMETA_PARAMS; i++)
			{
				values[i] = metanull[i] ? (Datum) 0 : meta[i];
				nulls[i] = metanull[i] ? 'n' : ' ';
			}
			values[2] = datumCopy(values[2], false, -1);
			if (!metanull[4])
				values[4] = datumCopy(values[4], false, -1);
			if (!metanull[6])
				values[6] = datumCopy(values[6], false, -1);
			if (!metanull[7])
				values[7] = datumCopy(values[7], false, -1); /* the entry's, see changed_columns() */
			for (i = 0; i < entry->nmirror; i++)
			{
				int a = entry->mirror[i] - 1;

				values[NMETA_PARAMS + i] = vals != NULL ? vals[a] : (Datum) 0;
				nulls[NMETA_PARAMS + i] = (vals == NULL || nulls_in[a]) ? 'n' : ' ';
			}
			insert_spi(entry, values, nulls);
			return;
		}
	}
}

PG_FUNCTION_INFO_V1(bv_audit_capture_trigger);

/*
 * Refuse to record an INSERT or UPDATE whose row version this transaction
 * has already updated or deleted again.  AFTER row triggers fire in name
 * order at the end of the statement; another AFTER trigger of the table
 * that fires before bv_audit_capture (a name that sorts earlier) and
 * updates or deletes the same row runs a nested statement whose own record
 * is written first: the history would then read U(after) before I(before),
 * or D before I (a ghost row in as_of()).  Renaming our trigger cannot help
 * (a name can always sort earlier), so the write is refused instead, and
 * rolls back.  A row lock (SELECT ... FOR UPDATE) is not an update.
 */
static void
check_not_superseded(TriggerData *trigdata, HeapTuple image)
{
	HeapTupleHeader tup = image->t_data;

	if (tup == NULL || (tup->t_infomask & HEAP_XMAX_INVALID) ||
		HEAP_XMAX_IS_LOCKED_ONLY(tup->t_infomask))
		return;
	if (!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetUpdateXid(tup)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("a row of %s was changed again by a trigger that fires before bv_audit_capture",
					RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("AFTER row triggers fire in name order; the other trigger's change would be "
					   "recorded before the change that caused it."),
			 errhint("Make that trigger a BEFORE trigger (which changes the row before it is stored), "
					 "or give it a name that sorts after \"bv_audit_capture\".")));
}

/*
 * The AFTER row trigger (INSERT, UPDATE, DELETE) and AFTER TRUNCATE
 * statement trigger installed by bv_audit.enable().
 *
 * An UPDATE that changes the primary key is a move: the row leaves its old
 * key and takes a new one, and history() and as_of() find rows by key.  It
 * is recorded as a D of the old image under the old key and an I of the new
 * image under the new key, both with audit_changed (a plain D or I has
 * none), so that the old key's history ends and the new key's begins.  The
 * D is left out when the old key is in the table again once the statement
 * is done (another row of the same statement moved into it, e.g. a swap of
 * two keys): AFTER row triggers run in row order after the statement, and a
 * D written after that row's I would end the history of a key that exists.
 */
Datum
bv_audit_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc desc;
	const BvAuditContext *ctx;
	HeapTuple image = NULL;
	Datum *ivals = NULL, *ovals = NULL;
	bool *inulls = NULL, *onulls = NULL;
	int op;
	int32 tracked_id;
	TimestampTz ts;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		(TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) &&
		 !TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv_audit.capture_trigger() must be an AFTER row trigger or an AFTER TRUNCATE trigger"),
				 errhint("Install it with bv_audit.enable().")));

	tracked_id = tracked_id_arg(trigdata);
	desc = RelationGetDescr(trigdata->tg_relation);
	ctx = bv_audit_context();
	/*
	 * The record's time: the clock now, in an AFTER trigger, so after the
	 * statement took the row's lock (see the file comment).
	 */
	ts = GetCurrentTimestamp();

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = 0;
		image = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = 1;
		image = trigdata->tg_newtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		op = 2;
		image = trigdata->tg_trigtuple;
	}
	else
		op = 3;

	if (op == 0 || op == 1)
		check_not_superseded(trigdata, image);

	/* Deform the row images once: O(columns), not O(columns^2). */
	if (image != NULL)
	{
		ivals = palloc(sizeof(Datum) * desc->natts);
		inulls = palloc(sizeof(bool) * desc->natts);
		heap_deform_tuple(image, desc, ivals, inulls);
	}
	if (op == 1)
	{
		CaptureEntry *entry;

		ovals = palloc(sizeof(Datum) * desc->natts);
		onulls = palloc(sizeof(bool) * desc->natts);
		heap_deform_tuple(trigdata->tg_trigtuple, desc, ovals, onulls);

		entry = get_entry(trigdata->tg_relation, tracked_id, ts);
		if (key_changed(entry, desc, ovals, onulls, ivals, inulls))
		{
			if (!key_exists(entry, trigdata->tg_relation, ovals, onulls))
				write_record(trigdata, tracked_id, ctx, ts, 2, ovals, onulls, ovals, onulls, ivals, inulls);
			write_record(trigdata, tracked_id, ctx, ts, 0, ivals, inulls, ovals, onulls, ivals, inulls);
			return PointerGetDatum(NULL);
		}
	}
	write_record(trigdata, tracked_id, ctx, ts, op, ivals, inulls, ovals, onulls, ivals, inulls);
	return PointerGetDatum(NULL);
}
