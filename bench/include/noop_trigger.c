/*-------------------------------------------------------------------------
 *
 * noop_trigger.c
 *	  A C row trigger that does nothing: bench/audit.sh's "floor" variant.
 *
 * bench-audit builds it with PGXS into its own output directory and loads
 * it by path into the throw-away cluster.  Installed AFTER INSERT OR UPDATE
 * OR DELETE ... FOR EACH ROW next to bv_audit.stamp()'s BEFORE trigger, it
 * measures what PostgreSQL charges for the trigger structure bv_audit
 * uses (a BEFORE row trigger, with the row lock the executor takes for it,
 * and an AFTER row trigger, with its event queue and the re-fetch of the row
 * versions at the end of the statement) before any audit record is
 * written.  Not part of any extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_noop_trigger);

Datum
bench_noop_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("bench_noop_trigger() must be called as a trigger")));
	return PointerGetDatum(NULL);
}
