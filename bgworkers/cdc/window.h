/*-------------------------------------------------------------------------
 *
 * window.h
 *	  The in-flight window (window.c): the transactions read from the slot
 *	  whose events are not all acknowledged yet, in commit order.  Below
 *	  the sinks (which report acknowledgements into it) and the stream
 *	  (which opens and commits its entries).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_WINDOW_H
#define BV_CDC_WINDOW_H

#include "bv_cdc.h"

/* One transaction (or snapshot chunk) of the window. */
typedef struct CdcTxn
{
	XLogRecPtr end_lsn;
	int64 xid;
	int64 commit_us; /* microseconds since the Unix epoch */
	int64 pending;   /* events handed to sinks, not yet acknowledged */
	bool committed;
	bool failed; /* a message of it was lost: never confirm past it */
	bool held;   /* an event of it was for a sink that could not start (ADR 0032) */
} CdcTxn;

extern void cdc_window_reset(void);
extern int cdc_window_open(XLogRecPtr end_lsn, int64 xid, int64 commit_us);
extern CdcTxn *cdc_window_entry(int idx);
extern uint64 cdc_window_opaque(int idx);
extern XLogRecPtr cdc_window_delivered(uint64 opaque, bool ok);
extern void cdc_window_advance(XLogRecPtr *confirmed);
extern int cdc_window_count(void);
extern bool cdc_window_room(void);
extern bool cdc_window_held(void);
extern TimestampTz cdc_window_oldest_commit(void);

#endif /* BV_CDC_WINDOW_H */
