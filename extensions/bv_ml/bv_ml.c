/*-------------------------------------------------------------------------
 *
 * bv_ml.c
 *	  Module entry of bv_ml: a transaction callback for the model cache.
 *
 * bv_ml needs no shared memory, settings or workers: the feature store is
 * SQL (sql/bv_ml/), and scoring state is per backend (model_cache.c).  The
 * only hook is a transaction callback that frees cached models replaced
 * during the transaction, once no statement can still use them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"

#include "bv_ml.h"

PG_MODULE_MAGIC;

void _PG_init(void);

static void
ml_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			ml_cache_xact_end();
			break;
		default:
			break;
	}
}

void
_PG_init(void)
{
	RegisterXactCallback(ml_xact_callback, NULL);
}
