/*-------------------------------------------------------------------------
 *
 * bv_audit.c
 *	  Module start-up of bv_audit and the relcache invalidation wiring.
 *
 * The stamp and capture triggers keep per-table state (column positions,
 * the audit table, a prepared INSERT) in backend-local hash tables so that
 * no row ever costs a catalog lookup.  That state is derived from the
 * catalogs of two relations, the tracked table and its audit table, so one
 * relcache callback, registered here once per backend, drops the entries of
 * either: any DDL on them (ALTER TABLE, a new partition, a recreated
 * trigger, bv_audit._invalidate()) reaches every backend at commit through
 * the shared invalidation queue, and the next row rebuilds the entry.
 *
 * Nothing here allocates; the caches live in their own memory contexts
 * under CacheMemoryContext (see capture.c and stamp.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/inval.h"
#include "utils/syscache.h"

#include "bv_audit.h"

PG_MODULE_MAGIC;

void _PG_init(void);

/* Forward one relcache invalidation to every cache of the module. */
static void
bv_audit_relcache_callback(Datum arg, Oid relid)
{
	bv_audit_capture_invalidate(relid);
	bv_audit_stamp_invalidate(relid);
}

/*
 * Module load: register the relcache callback and the hooks that put the
 * context of WAL-mode writes into the WAL (wal_context.c).  Callbacks cannot be
 * unregistered, and a library is never unloaded, so this runs once.  When
 * preloaded, also reserve the shared memory of the audit_id allocator
 * (audit_id.c) and register the WAL worker (wal_worker.c); loaded later,
 * ids come from nextval() and WAL-mode tables are not recorded.
 */
void
_PG_init(void)
{
	CacheRegisterRelcacheCallback(bv_audit_relcache_callback, (Datum) 0);
	bv_audit_wal_hooks_init();
	if (process_shared_preload_libraries_in_progress)
	{
		bv_audit_ids_init();
		bv_audit_wal_worker_init();
	}
}

PG_FUNCTION_INFO_V1(bv_audit_invalidate);

/*
 * bv_audit._invalidate(regclass): make every backend rebuild its cached
 * state for a table at the next row, after this transaction commits.  Used
 * by enable()/disable() when only bv_audit's own configuration changed.
 */
Datum
bv_audit_invalidate(PG_FUNCTION_ARGS)
{
	Oid relid = PG_GETARG_OID(0);

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid),
				 errhint("Pass an existing table.")));
	CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}
