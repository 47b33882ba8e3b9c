/*
 * hnswvacuum.c: VACUUM of an hnsw index.
 *
 * ambulkdelete reads every page; an element whose heap tuple VACUUM is
 * removing is marked deleted and its heap TID cleared, in one generic WAL
 * record per page.  A deleted element stays in the graph: it keeps its
 * links, searches still travel through it (so connectivity is unchanged),
 * and scans do not return it.  Its space is not reused; REINDEX compacts.
 * (Repairing the neighbors' lists and reusing the slot, as pgvector does, is
 * left for a later version: see docs/adr/0040-vector-hnsw.md.)
 *
 * The heap TID is cleared before the heap's second pass frees the line
 * pointer, so an element never points at a tuple that reuses the TID.  Scans
 * use MVCC snapshots; a scan that read an element's TID before it was
 * cleared sees the old tuple as dead or, if the TID was reused meanwhile, a
 * tuple newer than its snapshot, which it does not return.
 *
 * amvacuumcleanup counts the live elements and pages.
 * Locking: one exclusive buffer lock at a time.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "commands/vacuum.h"
#include "miscadmin.h"

IndexBulkDeleteResult *
hnswbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
			   IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);

	if (stats == NULL)
		stats = palloc0(sizeof(IndexBulkDeleteResult));

	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf;
		Page page;
		GenericXLogState *state = NULL;
		OffsetNumber maxoff;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		if (PageIsNew(page))
		{
			UnlockReleaseBuffer(buf);
			continue;
		}
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));

			if (et->deleted)
				continue;
			if (!callback(&et->heaptid, callback_state))
			{
				stats->num_index_tuples++;
				continue;
			}
			if (state == NULL)
			{
				state = GenericXLogStart(index);
				page = GenericXLogRegisterBuffer(state, buf, 0);
				et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
			}
			et->deleted = 1;
			ItemPointerSetInvalid(&et->heaptid);
			stats->tuples_removed++;
		}
		if (state != NULL)
			GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
	}
	stats->num_pages = nblocks;
	return stats;
}

IndexBulkDeleteResult *
hnswvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	Relation index = info->index;
	BlockNumber nblocks;

	if (info->analyze_only)
		return stats;
	if (stats != NULL)
		return stats;

	/* no bulkdelete ran: count the live elements */
	stats = palloc0(sizeof(IndexBulkDeleteResult));
	nblocks = RelationGetNumberOfBlocks(index);
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf;
		Page page;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
				if (!((HnswElementTuple) PageGetItem(page, PageGetItemId(page, off)))->deleted)
					stats->num_index_tuples++;
		UnlockReleaseBuffer(buf);
	}
	stats->num_pages = nblocks;
	return stats;
}
