/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  The worker's SPI batches in pg_cron's shape and the quarantine
 *	  (batch.c): the lowest layer of the worker, used by every other.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_BATCH_H
#define BV_CDC_BATCH_H

#include "nodes/pg_list.h"

#include "bv_cdc.h"

/* batch.c: the worker's SPI batches (pg_cron's shape), the quarantine */
extern void cdc_begin_batch(const char *activity);
extern void cdc_end_batch(void);
extern char *cdc_batch_failed(MemoryContext outer);
extern List *cdc_text_array_to_list(Datum d, bool isnull, bool keep_nulls);
extern void cdc_quarantine(XLogRecPtr lsn, const char *reason, const char *payload, int len);

#endif /* BV_CDC_BATCH_H */
