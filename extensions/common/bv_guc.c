/*-------------------------------------------------------------------------
 *
 * bv_guc.c
 *	  Reading configuration settings the way BitVelocity means them.
 *
 * Custom settings such as "request.jwt.claims" or "bv.actor" read back as an
 * empty string once a transaction-local value has been reset at the end of
 * the transaction, and as NULL when they were never set in the session.  For
 * every BitVelocity reader both mean "not given", so one helper folds them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "bv_common.h"

/*
 * bv_guc_get_nonempty
 *		The current value of setting "name", or NULL when it is unknown, unset
 *		or empty.  The result points into GUC storage: copy it before running
 *		anything that could change the setting.
 */
const char *
bv_guc_get_nonempty(const char *name)
{
	const char *value = GetConfigOption(name, true, false);

	if (value == NULL || value[0] == '\0')
		return NULL;
	return value;
}
