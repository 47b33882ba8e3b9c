/*-------------------------------------------------------------------------
 *
 * stamp.c
 *	  bv_audit.stamp_trigger(): fill the audit columns of a row.
 *
 * bv_audit.stamp(tbl) adds created_by, created_at, updated_by and updated_at
 * to a table and installs this BEFORE INSERT OR UPDATE row trigger.  On
 * INSERT all four are set from bv.actor() (read once per statement, shared
 * with the capture trigger; see context.c) and the transaction time; on
 * UPDATE, created_* are copied from the old row whatever the client sent
 * (they cannot be forged) and updated_* are set again.
 *
 * The positions of the four columns are cached per table in a hash table in
 * its own context under CacheMemoryContext, keyed by the table's OID, and
 * dropped by the relcache callback (bv_audit.c) whenever the table changes,
 * so a row costs no lookup by name.  Backend-local; no locks beyond those
 * the executor already holds on the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "bv_audit.h"

typedef struct StampEntry
{
	Oid relid; /* hash key */
	bool valid;
	int cols[4]; /* attnums: created_by, created_at, updated_by, updated_at */
} StampEntry;

static HTAB *stamp_cache = NULL;

static const char *const stamp_names[4] = {"created_by", "created_at",
										   "updated_by", "updated_at"};
static const Oid stamp_types[4] = {TEXTOID, TIMESTAMPTZOID, TEXTOID,
								   TIMESTAMPTZOID};

void
bv_audit_stamp_invalidate(Oid relid)
{
	HASH_SEQ_STATUS status;
	StampEntry *entry;

	if (stamp_cache == NULL)
		return;
	if (OidIsValid(relid))
	{
		entry = hash_search(stamp_cache, &relid, HASH_FIND, NULL);
		if (entry != NULL)
			entry->valid = false;
		return;
	}
	hash_seq_init(&status, stamp_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		entry->valid = false;
}

/* Find the four columns in the table's descriptor; refuse wrong types. */
static void
build_entry(StampEntry *entry, Relation rel)
{
	TupleDesc desc = RelationGetDescr(rel);
	int i, a;

	for (i = 0; i < 4; i++)
	{
		entry->cols[i] = 0;
		for (a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (att->attisdropped ||
				strcmp(NameStr(att->attname), stamp_names[i]) != 0)
				continue;
			if (att->atttypid != stamp_types[i])
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("audit column \"%s\" of table \"%s\" has the wrong type",
								stamp_names[i], RelationGetRelationName(rel)),
						 errdetail("The stamp trigger writes %s values into it.",
								   i % 2 == 0 ? "text" : "timestamp with time zone"),
						 errhint("Change the column's type, or drop it and run bv_audit.stamp() again.")));
			entry->cols[i] = a + 1;
		}
		if (entry->cols[i] == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("audit column \"%s\" of table \"%s\" does not exist",
							stamp_names[i], RelationGetRelationName(rel)),
					 errdetail("The stamp trigger fills created_by, created_at, updated_by and updated_at."),
					 errhint("Run bv_audit.stamp() on the table again to add the missing columns.")));
	}
	entry->valid = true;
}

static StampEntry *
get_entry(Relation rel)
{
	Oid relid = RelationGetRelid(rel);
	StampEntry *entry;
	bool found;

	if (stamp_cache == NULL)
	{
		HASHCTL ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(StampEntry);
		ctl.hcxt = AllocSetContextCreate(CacheMemoryContext, "bv_audit stamp cache",
										 ALLOCSET_SMALL_SIZES);
		stamp_cache = hash_create("bv_audit stamp cache", 32, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(stamp_cache, &relid, HASH_ENTER, &found);
	if (!found)
		entry->valid = false;
	if (!entry->valid)
		build_entry(entry, rel);
	return entry;
}

PG_FUNCTION_INFO_V1(bv_audit_stamp_trigger);

/*
 * The BEFORE INSERT OR UPDATE row trigger installed by bv_audit.stamp().
 */
Datum
bv_audit_stamp_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	StampEntry *entry;
	HeapTuple newtuple;
	Datum values[4];
	bool nulls[4];
	Datum now;
	Datum actor;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv_audit.stamp_trigger() must be a BEFORE INSERT OR UPDATE row trigger"),
				 errhint("Install it with bv_audit.stamp().")));

	entry = get_entry(trigdata->tg_relation);
	now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	actor = bv_audit_context()->actor;

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		newtuple = trigdata->tg_trigtuple;
		values[0] = actor;
		values[1] = now;
		nulls[0] = nulls[1] = false;
	}
	else
	{
		TupleDesc desc = RelationGetDescr(trigdata->tg_relation);

		newtuple = trigdata->tg_newtuple;
		/* created_* always come from the stored row. */
		values[0] = heap_getattr(trigdata->tg_trigtuple, entry->cols[0], desc, &nulls[0]);
		values[1] = heap_getattr(trigdata->tg_trigtuple, entry->cols[1], desc, &nulls[1]);
	}
	values[2] = actor;
	values[3] = now;
	nulls[2] = nulls[3] = false;

	return PointerGetDatum(heap_modify_tuple_by_cols(newtuple,
													 RelationGetDescr(trigdata->tg_relation),
													 4, entry->cols, values, nulls));
}
