/*-------------------------------------------------------------------------
 *
 * window.c
 *	  The in-flight window: which transactions the slot may confirm.
 *
 * Each transaction read from the slot ("B" ... "C"), and each snapshot
 * chunk, gets an entry in a ring of transactions in commit order.  Each
 * event handed to a sink for one of its changes increments the entry's
 * pending count; the sink's acknowledgement (sink.c, through
 * cdc_window_delivered) decrements it.  The slot's confirmed position moves
 * to a transaction's end LSN only when it and every transaction before it
 * are committed and fully acknowledged (cdc_window_advance).  After a
 * crash the server replays from that position: what was produced but not
 * acknowledged is produced again (duplicates are possible, loss is not).
 *
 * An event is identified to the sinks by an opaque number: the stream's
 * epoch in the high 32 bits, the ring index in the low ones.  Every
 * restart of the stream starts a new epoch (cdc_window_reset), so reports
 * of a previous start (producers purged while stopping) are ignored.
 *
 * Held slot (ADR 0032): a transaction with events for a sink that could
 * not start is "held"; from the first such transaction on, the confirmed
 * position stays where it was while the other sinks stream on; when that
 * sink starts again the stream restarts from the slot.
 *
 * Only the worker runs this, in its one thread.  The ring is allocated
 * once, in TopMemoryContext.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "window.h"

#define RING_CAPACITY 65536

static CdcTxn *ring = NULL;
static uint32 epoch = 1;
static int ring_head = 0;
static int ring_count = 0;
static bool slot_held = false;

/* Empty the window and start a new epoch (the stream starts over). */
void
cdc_window_reset(void)
{
	if (ring == NULL)
		ring = MemoryContextAllocZero(TopMemoryContext, sizeof(CdcTxn) * RING_CAPACITY);
	epoch++;
	ring_head = ring_count = 0;
	slot_held = false;
}

/* Open an entry at the end of the window: its index, or -1 when full. */
int
cdc_window_open(XLogRecPtr end_lsn, int64 xid, int64 commit_us)
{
	int idx;

	if (ring == NULL || ring_count >= RING_CAPACITY)
		return -1;
	idx = (ring_head + ring_count) % RING_CAPACITY;
	ring_count++;
	ring[idx].end_lsn = end_lsn;
	ring[idx].xid = xid;
	ring[idx].commit_us = commit_us;
	ring[idx].pending = 0;
	ring[idx].committed = false;
	ring[idx].failed = false;
	ring[idx].held = false;
	return idx;
}

CdcTxn *
cdc_window_entry(int idx)
{
	Assert(ring != NULL && idx >= 0 && idx < RING_CAPACITY);
	return &ring[idx];
}

/* The opaque number that identifies an event of entry idx to the sinks. */
uint64
cdc_window_opaque(int idx)
{
	return ((uint64) epoch << 32) | (uint32) idx;
}

/*
 * cdc_window_delivered
 *		An acknowledgement (ok) or a loss report for an event of entry
 *		"opaque": returns the transaction's end LSN, or InvalidXLogRecPtr
 *		for a stale report.  A lost event pins its transaction: the slot is
 *		never confirmed past it, and the stream restarts and replays it.
 */
XLogRecPtr
cdc_window_delivered(uint64 opaque, bool ok)
{
	uint32 idx = (uint32) (opaque & 0xffffffff);

	if ((uint32) (opaque >> 32) != epoch || ring == NULL || idx >= RING_CAPACITY)
		return InvalidXLogRecPtr;
	ring[idx].pending--;
	if (!ok)
		ring[idx].failed = true;
	return ring[idx].end_lsn;
}

/*
 * cdc_window_advance
 *		Drop every leading entry that is committed and acknowledged, moving
 *		*confirmed to its end LSN unless the slot is held.
 */
void
cdc_window_advance(XLogRecPtr *confirmed)
{
	while (ring_count > 0 && ring[ring_head].committed && ring[ring_head].pending == 0 &&
		   !ring[ring_head].failed)
	{
		if (ring[ring_head].held && !slot_held)
		{
			slot_held = true;
			ereport(LOG, (errmsg("bv_cdc holds its slot at %X/%X: a sink that could not start "
								 "has routed changes after it",
								 LSN_FORMAT_ARGS(*confirmed)),
						  errhint("The other sinks stream on; the held changes are replayed "
								  "when the sink starts again.")));
		}
		if (!slot_held && ring[ring_head].end_lsn > *confirmed)
			*confirmed = ring[ring_head].end_lsn;
		ring_head = (ring_head + 1) % RING_CAPACITY;
		ring_count--;
	}
}

int
cdc_window_count(void)
{
	return ring_count;
}

/* Room for one more entry (and a snapshot chunk's)? */
bool
cdc_window_room(void)
{
	return ring_count < RING_CAPACITY - 1;
}

/* Is the slot held for a sink that could not start? */
bool
cdc_window_held(void)
{
	return slot_held;
}

/* Commit time of the oldest entry (a TimestampTz), 0 when the window is empty. */
TimestampTz
cdc_window_oldest_commit(void)
{
	if (ring_count == 0)
		return 0;
	return (TimestampTz) (ring[ring_head].commit_us -
						  ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC));
}
