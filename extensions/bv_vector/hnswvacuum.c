/*
 * hnswvacuum.c: VACUUM of an hnsw index, in five passes over the pages.
 *
 * 1. Mark.  An element whose heap tuple VACUUM is removing is marked
 *    deleted (HNSW_DELETED) and its heap TID cleared, in one generic WAL
 *    record per page.  Every deleted or free element, of this VACUUM or an
 *    earlier one, goes into a set.  The heap TID is cleared before the
 *    heap's second pass frees the line pointer, so an element never points
 *    at a tuple that reuses the TID.
 *
 *    Then a barrier: the exclusive HNSW_UPDATE_LOCK, taken and released,
 *    waits for the inserts in flight (each holds it in share mode from its
 *    search to its last link, hnswinsert.c).  An insert that read an
 *    element before it was marked has finished, and its links are there
 *    for pass 2 to repair; a later insert sees the mark and never links to
 *    the element.
 *
 * 2. Repair.  A live element whose neighbor list at some level names a
 *    deleted element gets a new list at that level, chosen with the insert's
 *    heuristic (HnswSelectNeighbors) from its live neighbors and the
 *    "bridges" of the deleted ones (the live elements reached from a deleted
 *    neighbor over deleted elements), keeping at least one member of each
 *    bridge: the paths that ran through deleted elements now go around
 *    them, so searches stop spending their ef on rows they cannot return,
 *    and elements reachable only through deleted ones stay reachable.  The list is computed from a copy
 *    taken under a share lock and written under an exclusive lock; links a
 *    concurrent insert added meanwhile are kept while slots remain.
 *
 * 3. Entry point.  If the entry point is deleted, the live element of the
 *    highest level seen in pass 2 becomes the entry point (under the
 *    exclusive HNSW_UPDATE_LOCK that orders entry-point changes, see
 *    hnswinsert.c); with no live element left the index is empty again.
 *
 * 4. Reconnect.  What the entry point reaches over level-0 links between
 *    live elements is marked (in memory, within maintenance_work_mem), and
 *    each group of live elements it does not reach is linked both ways with
 *    the nearest reached element a level-0 search from the entry point
 *    finds (hnswreconnect.c).  (Scans return only what level 0 connects to
 *    where they land.)  Bridges are bounded (HNSW_BRIDGE_VISITS), so a
 *    cluster whose every path ran through a long stretch of deleted
 *    elements is found here.
 *
 * 5. Free.  After passes 1-4 no live element links to a deleted one (the
 *    barrier keeps inserts from adding such links), so every deleted
 *    element becomes free (HNSW_FREE): its lists are emptied, and inserts
 *    may overwrite its slot with a new element (hnswinsert.c).  The
 *    metapage's free_page points at the first page with a free slot.  Space
 *    is thus reused, and a table with churn keeps its index size bounded.
 *    A crash anywhere leaves a sound index: an element is freed only after
 *    the repairs that removed the links to it are in the WAL, and a missed
 *    hint only delays reuse to the next VACUUM.
 *
 * A scan that read a deleted element before it was freed may still expand
 * it, or the new element that took its slot (hnswscan.c explains why that
 * is harmless).
 *
 * amvacuumcleanup counts the live elements and pages.
 * Locking: one buffer lock at a time.  Memory: a context reset per page.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"

/* a live element's neighbor list (one level) that names a deleted element */
typedef struct RepairItem
{
	ItemPointerData tid;
	int lc;
	Vector *vec;
	int nold;
	ItemPointerData old[2 * HNSW_MAX_M];
} RepairItem;

static inline bool
IsDead(HnswTidSet *dead, ItemPointer tid)
{
	return HnswTidSetContains(dead, HnswTidKey(tid));
}

/* pass 1: mark the removed rows' elements; collect every deleted element */
static void
HnswMarkDeleted(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				IndexBulkDeleteCallback callback, void *callback_state,
				HnswTidSet *dead, int64 *ndead)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);

	/* a VACUUM may call bulkdelete more than once: count this pass's elements */
	stats->num_index_tuples = 0;
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
			ItemPointerData tid;

			ItemPointerSet(&tid, blk, off);
			if (et->deleted == HNSW_DELETED)
			{
				HnswTidSetAdd(dead, HnswTidKey(&tid));
				(*ndead)++;
				continue;
			}
			/*
			 * A free slot is not in the set: nothing links to it, and an
			 * insert may reuse it for a live element while this VACUUM runs.
			 */
			if (et->deleted == HNSW_FREE)
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
			HnswTidSetAdd(dead, HnswTidKey(&tid));
			(*ndead)++;
		}
		if (state != NULL)
			GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
	}
	stats->num_pages = nblocks;
}

/* how many deleted elements a bridge search visits per deleted neighbor */
#define HNSW_BRIDGE_VISITS 64

/* the candidates for one item's new list */
typedef struct RepairCands
{
	HnswCandidate *c;
	int n;
	int cap;
	HnswTidSet *seen;
} RepairCands;

/* tid as a candidate (if live, of the item's level and new); its index or -1 */
static int
AddCandidate(Relation index, const HnswDistance *hd, RepairItem *item, RepairCands *rc,
			 ItemPointer tid)
{
	HnswCandidate *c;

	if (ItemPointerEquals(tid, &item->tid))
		return -1;
	if (!HnswTidSetAdd(rc->seen, HnswTidKey(tid)))
	{
		for (int i = 0; i < rc->n; i++)
			if (ItemPointerEquals(&rc->c[i].tid, tid))
				return i;
		return -1;
	}
	if (rc->n == rc->cap)
		rc->c = repalloc(rc->c, sizeof(HnswCandidate) * (rc->cap *= 2));
	c = &rc->c[rc->n];
	HnswLoadElement(index, tid, hd, item->vec, c, true, NULL, NULL, item->lc);
	if (!ItemPointerIsValid(&c->heaptid) || c->level < item->lc)
		return -1;
	return rc->n++;
}

/*
 * The bridge of a deleted neighbor: the live elements reached from it over
 * links between deleted elements (a bounded breadth-first search), added as
 * candidates.  Returns the nearest of them to the item (an index into the
 * candidates), or -1 when the deleted neighbor led nowhere live.
 */
static int
AddBridge(Relation index, const HnswDistance *hd, HnswTidSet *dead, RepairItem *item,
		  RepairCands *rc, ItemPointer from)
{
	ItemPointerData queue[HNSW_BRIDGE_VISITS];
	HnswTidSet *visited = HnswTidSetCreate(CurrentMemoryContext, HNSW_BRIDGE_VISITS * 2);
	ItemPointerData *nbrs = palloc(sizeof(ItemPointerData) * 2 * HNSW_MAX_M);
	int qh = 0,
		qt = 0;
	int nearest = -1;

	queue[qt++] = *from;
	HnswTidSetAdd(visited, HnswTidKey(from));
	while (qh < qt)
	{
		HnswCandidate tmp;
		int nn;

		HnswLoadElement(index, &queue[qh++], hd, NULL, &tmp, false, nbrs, &nn, item->lc);
		for (int j = 0; j < nn; j++)
		{
			if (IsDead(dead, &nbrs[j]))
			{
				if (qt < HNSW_BRIDGE_VISITS && HnswTidSetAdd(visited, HnswTidKey(&nbrs[j])))
					queue[qt++] = nbrs[j];
			}
			else
			{
				int i = AddCandidate(index, hd, item, rc, &nbrs[j]);

				if (i >= 0 && (nearest < 0 || rc->c[i].dist < rc->c[nearest].dist))
					nearest = i;
			}
		}
	}
	return nearest;
}

static int
CandidateIndexCmp(const void *a, const void *b, void *arg)
{
	const HnswCandidate *c = arg;
	float da = c[*(const int *) a].dist;
	float db = c[*(const int *) b].dist;

	return da < db ? -1 : (da > db ? 1 : 0);
}

/*
 * The new list of one item, written if the element still needs it.
 *
 * Candidates: the live neighbors, and the bridges of the deleted ones.  The
 * insert's heuristic chooses among them; then every deleted neighbor whose
 * bridge lost all its members gets its bridge's nearest member back (in a
 * free slot, or in place of the farthest chosen element that is not such a
 * representative): the heuristic alone drops the long links between
 * clusters that ran through deleted elements, and with them whole clusters'
 * reachability.  A list has as many slots as it had neighbors, so every
 * deleted neighbor can keep one representative.
 */
static void
RepairList(Relation index, const HnswDistance *hd, HnswTidSet *dead, RepairItem *item)
{
	RepairCands rc;
	int nbridge = 0;
	ItemPointerData *bridge = palloc(sizeof(ItemPointerData) * Max(item->nold, 1));
	int *order;
	HnswCandidate *sorted;
	int *chosen;
	bool *rep;
	int nchosen;
	int slots;
	Buffer buf;
	Page page;
	GenericXLogState *state;
	HnswElementTuple et;
	HnswNeighbor *ns;
	HnswNeighbor *fresh;
	int nfresh = 0;
	uint16 *counts;

	rc.cap = 64;
	rc.n = 0;
	rc.c = palloc(sizeof(HnswCandidate) * rc.cap);
	rc.seen = HnswTidSetCreate(CurrentMemoryContext, 64);
	for (int i = 0; i < item->nold; i++)
		if (!IsDead(dead, &item->old[i]))
			AddCandidate(index, hd, item, &rc, &item->old[i]);
	for (int i = 0; i < item->nold; i++)
	{
		int near;

		if (!IsDead(dead, &item->old[i]))
			continue;
		near = AddBridge(index, hd, dead, item, &rc, &item->old[i]);
		if (near >= 0)
			bridge[nbridge++] = rc.c[near].tid;
	}

	/* sorted by distance, as the heuristic wants */
	order = palloc(sizeof(int) * Max(rc.n, 1));
	for (int i = 0; i < rc.n; i++)
		order[i] = i;
	qsort_arg(order, rc.n, sizeof(int), CandidateIndexCmp, rc.c);
	sorted = palloc(sizeof(HnswCandidate) * Max(rc.n, 1));
	for (int i = 0; i < rc.n; i++)
		sorted[i] = rc.c[order[i]];

	buf = ReadBuffer(index, ItemPointerGetBlockNumber(&item->tid));
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(&item->tid)));
	if (et->deleted || item->lc > et->level)
	{
		GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
		return;
	}
	slots = HnswLevelSlots(et->m, item->lc);
	chosen = palloc(sizeof(int) * slots);
	rep = palloc0(sizeof(bool) * slots);
	nchosen = HnswSelectNeighbors(hd, item->vec, sorted, rc.n, slots, chosen);

	/* one representative per deleted neighbor whose bridge was dropped */
	for (int b = 0; b < nbridge; b++)
	{
		int idx = -1;
		int far = -1;

		for (int i = 0; i < nchosen && idx < 0; i++)
			if (ItemPointerEquals(&sorted[chosen[i]].tid, &bridge[b]))
				idx = i;
		if (idx >= 0)
		{
			rep[idx] = true;
			continue;
		}
		for (int i = 0; i < rc.n && idx < 0; i++)
			if (ItemPointerEquals(&sorted[i].tid, &bridge[b]))
				idx = i;
		if (nchosen < slots)
		{
			rep[nchosen] = true;
			chosen[nchosen++] = idx;
			continue;
		}
		for (int i = 0; i < nchosen; i++)
			if (!rep[i] && (far < 0 || sorted[chosen[i]].dist > sorted[chosen[far]].dist))
				far = i;
		if (far >= 0)
		{
			chosen[far] = idx;
			rep[far] = true;
		}
	}

	/* links added since the copy was taken, by a concurrent insert */
	ns = HnswTupleNeighbors(et, item->lc);
	counts = HnswTupleCounts(et);
	fresh = palloc(sizeof(HnswNeighbor) * slots);
	for (int i = 0; i < Min(counts[item->lc], slots); i++)
	{
		bool known = IsDead(dead, &ns[i].tid);

		for (int j = 0; j < item->nold && !known; j++)
			known = ItemPointerEquals(&ns[i].tid, &item->old[j]);
		for (int j = 0; j < nchosen && !known; j++)
			known = ItemPointerEquals(&ns[i].tid, &sorted[chosen[j]].tid);
		if (!known)
			fresh[nfresh++] = ns[i];
	}

	for (int i = 0; i < nchosen; i++)
	{
		ns[i].tid = sorted[chosen[i]].tid;
		ns[i].dist = sorted[chosen[i]].dist;
	}
	for (int i = 0; i < nfresh && nchosen < slots; i++)
		ns[nchosen++] = fresh[i];
	counts[item->lc] = nchosen;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/* pass 2: repair the lists naming deleted elements; returns the best live entry */
static void
HnswRepairGraph(IndexVacuumInfo *info, HnswTidSet *dead,
				ItemPointer best, int *bestlevel)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	HnswDistance hd;
	MemoryContext pagecxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw vacuum page",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;

	{
		HnswMetaPageData meta;

		HnswReadMeta(index, &meta);
		HnswInitGraphDistance(&hd, index, meta.ip_max_norm2);
	}
	*bestlevel = -1;
	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		Buffer buf;
		Page page;
		List *items = NIL;
		ListCell *cell;

		vacuum_delay_point();
		old = MemoryContextSwitchTo(pagecxt);
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
		{
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));

				if (et->deleted)
					continue;
				if (et->level > *bestlevel)
				{
					*bestlevel = et->level;
					ItemPointerSet(best, blk, off);
				}
				for (int lc = 0; lc <= et->level; lc++)
				{
					HnswNeighbor *ns = HnswTupleNeighbors(et, lc);
					int cnt = Min(HnswTupleCounts(et)[lc], HnswLevelSlots(et->m, lc));
					bool needs = false;
					RepairItem *item;
					Vector *v;

					for (int i = 0; i < cnt && !needs; i++)
						needs = IsDead(dead, &ns[i].tid);
					if (!needs)
						continue;
					item = palloc(sizeof(RepairItem));
					ItemPointerSet(&item->tid, blk, off);
					item->lc = lc;
					v = HnswTupleVector(et);
					item->vec = palloc(VECTOR_SIZE(v->dim));
					memcpy(item->vec, v, VECTOR_SIZE(v->dim));
					item->nold = cnt;
					for (int i = 0; i < cnt; i++)
						item->old[i] = ns[i].tid;
					items = lappend(items, item);
				}
			}
		}
		UnlockReleaseBuffer(buf);

		foreach (cell, items)
		{
			CHECK_FOR_INTERRUPTS();
			RepairList(index, &hd, dead, lfirst(cell));
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(pagecxt);
	}
	MemoryContextDelete(pagecxt);
}

/* pass 3: a deleted entry point gives way to the best live element */
static void
HnswReplaceEntryPoint(Relation index, HnswTidSet *dead, ItemPointer best, int bestlevel)
{
	Buffer buf;
	GenericXLogState *state;
	HnswMetaPage meta;

	LockPage(index, HNSW_UPDATE_LOCK, ExclusiveLock);
	buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = HnswPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	if (meta->entry_level >= 0 && IsDead(dead, &meta->entry))
	{
		meta->entry_level = bestlevel;
		if (bestlevel >= 0)
			meta->entry = *best;
		else
			ItemPointerSetInvalid(&meta->entry);
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
	UnlockPage(index, HNSW_UPDATE_LOCK, ExclusiveLock);
}

/* pass 5: deleted elements become free slots; the metapage learns the first page with one */
static void
HnswFreeDeleted(IndexVacuumInfo *info)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	BlockNumber first = 0;
	Buffer buf;
	GenericXLogState *state;
	Page page;
	HnswMetaPage meta;

	for (BlockNumber blk = HNSW_METAPAGE_BLKNO + 1; blk < nblocks; blk++)
	{
		bool any = false;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		state = NULL;
		if (!PageIsNew(page))
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				HnswElementTuple et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));

				if (et->deleted == HNSW_LIVE)
					continue;
				any = true;
				if (et->deleted == HNSW_FREE)
					continue;
				if (state == NULL)
				{
					state = GenericXLogStart(index);
					page = GenericXLogRegisterBuffer(state, buf, 0);
					et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
				}
				et->deleted = HNSW_FREE;
				memset(HnswTupleCounts(et), 0, sizeof(uint16) * (et->level + 1));
			}
		if (state != NULL)
			GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
		if (any && first == 0)
			first = blk;
	}

	buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	meta = HnswPageGetMeta(page);
	if (meta->free_page != first)
	{
		meta->free_page = first;
		HnswMetaCover(page);
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

IndexBulkDeleteResult *
hnswbulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
			   IndexBulkDeleteCallback callback, void *callback_state)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw vacuum",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	HnswTidSet *dead = HnswTidSetCreate(cxt, 1024);
	int64 ndead = 0;
	ItemPointerData best;
	int bestlevel = -1;

	MemoryContextSwitchTo(old);
	if (stats == NULL)
		stats = palloc0(sizeof(IndexBulkDeleteResult));

	old = MemoryContextSwitchTo(cxt);
	HnswMarkDeleted(info, stats, callback, callback_state, dead, &ndead);
	if (ndead > 0)
	{
		/* the barrier: inserts that may have read an element before it was marked end */
		LockPage(info->index, HNSW_UPDATE_LOCK, ExclusiveLock);
		UnlockPage(info->index, HNSW_UPDATE_LOCK, ExclusiveLock);
		ItemPointerSetInvalid(&best);
		HnswRepairGraph(info, dead, &best, &bestlevel);
		HnswReplaceEntryPoint(info->index, dead, &best, bestlevel);
		HnswReconnect(info); /* hnswreconnect.c */
		HnswFreeDeleted(info);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
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
