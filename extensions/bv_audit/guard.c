/*-------------------------------------------------------------------------
 *
 * guard.c
 *	  Audit tables are append-only: the guard trigger and purge's door.
 *
 * Every audit table (and, for TRUNCATE, every partition of it) carries
 * bv_audit.append_only_trigger() as a BEFORE UPDATE OR DELETE row trigger
 * and a BEFORE TRUNCATE statement trigger.  Privileges alone cannot make a
 * table append-only for its owner or a superuser; a trigger stops them too,
 * unless they deliberately switch triggers off (ALTER TABLE ... DISABLE
 * TRIGGER, session_replication_role = replica), which the seal detects
 * after the fact (see digest.c and docs/adr/0010-audit-tamper-evidence.md).
 *
 * Retention is the one legitimate deleter.  bv_audit.purge() drops whole
 * partitions (no row trigger fires) and trims the partition that straddles
 * the cut-off through bv_audit._purge_delete(), which sets a backend-local
 * flag for the duration of its DELETE; the guard lets DELETEs through only
 * while that flag is set.  The flag cannot be set from SQL (a setting could
 * be), and _purge_delete() is revoked from PUBLIC.  An error inside the
 * DELETE resets the flag through PG_FINALLY.
 *
 * No memory is kept; backend-local; no locks of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/partition.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "bv_audit.h"

bool bv_audit_purge_active = false;

PG_FUNCTION_INFO_V1(bv_audit_append_only_trigger);

/* Refuse UPDATE, DELETE and TRUNCATE on an audit table, except purge's. */
Datum
bv_audit_append_only_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *what;
	Oid relid;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bv_audit.append_only_trigger() must be a BEFORE trigger"),
				 errhint("Audit tables are created by bv_audit.enable(); do not install this trigger by hand.")));

	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) && bv_audit_purge_active)
		return PointerGetDatum(trigdata->tg_trigtuple);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		what = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		what = "DELETE";
	else
		what = "TRUNCATE";

	/* Name the audit table, not the month's partition the row lives in. */
	relid = RelationGetRelid(trigdata->tg_relation);
	if (trigdata->tg_relation->rd_rel->relispartition)
		relid = get_partition_parent(relid, true);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("audit table \"%s\" is append-only", get_rel_name(relid)),
			 errdetail("%s is refused for every role; audit records are never changed.", what),
			 errhint("Old records are removed only by bv_audit.purge(), according to bv_audit.set_retention().")));
	PG_RETURN_NULL(); /* not reached */
}

PG_FUNCTION_INFO_V1(bv_audit_purge_delete);

/*
 * bv_audit._purge_delete(audit regclass, cutoff timestamptz): delete the
 * records of one audit table (or partition) older than cutoff, returning
 * how many went.  Internal to bv_audit.purge().
 */
Datum
bv_audit_purge_delete(PG_FUNCTION_ARGS)
{
	Oid relid = PG_GETARG_OID(0);
	Datum cutoff = PG_GETARG_DATUM(1);
	char *relname = get_rel_name(relid);
	char *nspname;
	char *sql;
	Oid argtypes[1] = {TIMESTAMPTZOID};
	uint64 deleted = 0;
	int ret;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("audit table with OID %u does not exist", relid),
				 errhint("Call bv_audit.purge(), which finds the audit tables itself.")));
	nspname = get_namespace_name(get_rel_namespace(relid));
	sql = psprintf("DELETE FROM %s WHERE audit_ts < $1",
				   quote_qualified_identifier(nspname, relname));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	bv_audit_purge_active = true;
	PG_TRY();
	{
		ret = SPI_execute_with_args(sql, 1, argtypes, &cutoff, NULL, false, 0);
		if (ret != SPI_OK_DELETE)
			elog(ERROR, "purging %s failed: %s", relname, SPI_result_code_string(ret));
		deleted = SPI_processed;
	}
	PG_FINALLY();
	{
		bv_audit_purge_active = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64((int64) deleted);
}
