/*
 * hnswinsert.c: adding one element to the on-disk graph (aminsert, and the
 * build once the in-memory graph outgrew maintenance_work_mem).
 *
 * The paper's INSERT, on pages:
 *   1. search from the entry point down to the new element's level keeping
 *      HNSW_EF_UPPER candidates (the paper keeps 1; see hnswbuild.c),
 *      then at each level from there to 0 with ef_construction, choosing the
 *      neighbors with the heuristic;
 *   2. write the new element tuple, with its neighbor lists, on the last page
 *      (or a new one);
 *   3. add the reverse links: each chosen neighbor's list at that level gets
 *      the new element, in a free slot, or in place of a farther neighbor
 *      the new element links to (HnswAddReverseLink);
 *   4. if the new element's level is above the entry point's, make it the
 *      entry point.
 * The element becomes reachable only in step 3, after it is complete, so a
 * concurrent scan never follows a link to a half-written element; a crash
 * between steps leaves at most an element with fewer reverse links.
 *
 * Deleted elements (hnswvacuum.c) are searched through like the others but
 * never chosen as neighbors.
 *
 * Concurrency: every page change is one generic WAL record on one buffer,
 * locked exclusively for the change alone; no two buffer locks are held at
 * once except the metapage after a data page is released.  Entry-point
 * changes are ordered by a heavyweight lock on block 0 (HNSW_UPDATE_LOCK):
 * inserts take it in share mode, and in exclusive mode when they may move
 * the entry point (a higher level, or an empty index).  Scans take no
 * heavyweight lock.
 *
 * Memory: each insert runs in a temporary context deleted at the end.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "storage/lmgr.h"
#include "utils/memutils.h"

/* a zeroed element tuple for vec at level; the caller fills the neighbors */
HnswElementTuple
HnswFormTuple(const Vector *vec, int m, int level, ItemPointer heaptid, Size *size)
{
	Size sz = HnswElementTupleSize(vec->dim, m, level);
	HnswElementTuple et = palloc0(sz);

	et->level = level;
	et->m = m;
	et->deleted = 0;
	et->heaptid = *heaptid;
	memcpy(HnswTupleVector(et), vec, VECTOR_SIZE(vec->dim));
	*size = sz;
	return et;
}

/* the metapage's insert page, moved forward to blk */
static void
HnswSetInsertPage(Relation index, BlockNumber blk)
{
	Buffer buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	GenericXLogState *state;
	HnswMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = HnswPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	if (meta->insert_page == InvalidBlockNumber || meta->insert_page < blk)
	{
		meta->insert_page = blk;
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/* the metapage's free-slot hint moves from "from" to "to", unless it moved meanwhile */
static void
HnswMoveFreeHint(Relation index, BlockNumber from, BlockNumber to)
{
	Buffer buf;
	GenericXLogState *state;
	Page page;
	HnswMetaPage meta;

	if (from == to)
		return;
	buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	meta = HnswPageGetMeta(page);
	if (meta->free_page == from)
	{
		meta->free_page = to;
		HnswMetaCover(page);
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/*
 * Put the tuple in a free element slot (hnswvacuum.c frees the slots of
 * deleted elements once no link leads to them) on the pages from the
 * metapage's hint on, looking at HNSW_REUSE_PAGES pages at most; the tuple
 * overwrites the free one in place (same offset; the size may differ, the
 * page makes room).  On a page the best fit is taken: a slot of the tuple's
 * own size (its level: HnswSlotLevel gave the new element the level of the
 * first free slot), else the smallest that fits, so that a small element
 * does not use up the room a larger one needs.  Nothing links to a free
 * slot, so the new element is unreachable until its reverse links are
 * added, as on a new page.  The hint moves to where the next insert should
 * look.  False when no slot was found.  The hint never moves past a page
 * that keeps a free slot.
 */
static bool
HnswReuseSlot(Relation index, HnswElementTuple et, Size size, BlockNumber hint, ItemPointer tid)
{
	BlockNumber nblocks;
	BlockNumber blk;
	BlockNumber next = InvalidBlockNumber; /* the first page walked that keeps a free slot */
	bool placed = false;

	if (hint == 0 || hint == InvalidBlockNumber)
		return false;
	nblocks = RelationGetNumberOfBlocks(index);
	for (blk = hint; blk < nblocks && blk < hint + HNSW_REUSE_PAGES && !placed; blk++)
	{
		Buffer buf = ReadBuffer(index, blk);
		Page page;
		int nfree = 0;                           /* free slots on this page */
		OffsetNumber best = InvalidOffsetNumber; /* the best fit */
		Size bestlen = 0;

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
		{
			Size room = PageGetExactFreeSpace(page);

			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				ItemId iid = PageGetItemId(page, off);
				HnswElementTuple old = (HnswElementTuple) PageGetItem(page, iid);
				Size len = ItemIdGetLength(iid);

				if (old->deleted != HNSW_FREE)
					continue;
				nfree++;
				if (MAXALIGN(size) > MAXALIGN(len) + room)
					continue; /* too small for this tuple: it stays free */
				if (best == InvalidOffsetNumber || (bestlen != size && (len == size || len < bestlen)))
				{
					best = off;
					bestlen = len;
				}
			}
			if (best != InvalidOffsetNumber)
			{
				GenericXLogState *state = GenericXLogStart(index);
				Page gpage = GenericXLogRegisterBuffer(state, buf, 0);

				if (PageIndexTupleOverwrite(gpage, best, (Item) et, size))
				{
					GenericXLogFinish(state);
					ItemPointerSet(tid, blk, best);
					placed = true;
					nfree--;
				}
				else
					GenericXLogAbort(state);
			}
		}
		UnlockReleaseBuffer(buf);
		if (nfree > 0 && next == InvalidBlockNumber)
			next = blk;
	}
	if (next == InvalidBlockNumber)
		next = blk < nblocks ? blk : 0;
	HnswMoveFreeHint(index, hint, next);
	return placed;
}

/*
 * The level of the first free slot from the hint on (within
 * HNSW_REUSE_PAGES pages) laid out for m, or -1 when there is none.  A new
 * element takes that level, so it fits the slot exactly and every free slot
 * can be reused (with levels of its own, a higher-level element found only
 * level-0 slots on full pages and the index grew; the refill after a full
 * DELETE added elements).  The level distribution stays the paper's: the
 * freed elements' levels were drawn from it, independent of the vectors,
 * and the slot taken depends on its place, not on the new vector.
 */
static int
HnswSlotLevel(Relation index, BlockNumber hint, int m)
{
	BlockNumber nblocks;

	if (hint == 0 || hint == InvalidBlockNumber)
		return -1;
	nblocks = RelationGetNumberOfBlocks(index);
	for (BlockNumber blk = hint; blk < nblocks && blk < hint + HNSW_REUSE_PAGES; blk++)
	{
		Buffer buf = ReadBuffer(index, blk);
		Page page;
		int level = -1;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!PageIsNew(page))
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page) && level < 0; off++)
			{
				HnswElementTuple old = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));

				if (old->deleted == HNSW_FREE && old->m == m)
					level = old->level;
			}
		UnlockReleaseBuffer(buf);
		if (level >= 0)
			return level;
	}
	return -1;
}

/* put the tuple in a free slot, on the insert page, or on a new page; its TID in *tid */
static void
HnswPlaceTuple(Relation index, HnswElementTuple et, Size size, const HnswMetaPageData *meta,
			   ItemPointer tid)
{
	Buffer buf;
	Page page;
	GenericXLogState *state;
	OffsetNumber off;
	BlockNumber insert_page = meta->insert_page;

	if (HnswReuseSlot(index, et, size, meta->free_page, tid))
		return;

	if (insert_page != InvalidBlockNumber)
	{
		buf = ReadBuffer(index, insert_page);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, buf, 0);
		if (PageIsNew(page))
			HnswInitPage(page);
		if (PageGetFreeSpace(page) >= MAXALIGN(size))
		{
			off = PageAddItem(page, (Item) et, size, InvalidOffsetNumber, false, false);
			if (off == InvalidOffsetNumber)
				elog(ERROR, "failed to add element to hnsw index \"%s\"",
					 RelationGetRelationName(index));
			GenericXLogFinish(state);
			ItemPointerSet(tid, insert_page, off);
			UnlockReleaseBuffer(buf);
			return;
		}
		GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
	}

	buf = HnswNewBuffer(index, MAIN_FORKNUM);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);
	HnswInitPage(page);
	off = PageAddItem(page, (Item) et, size, InvalidOffsetNumber, false, false);
	if (off == InvalidOffsetNumber)
		elog(ERROR, "failed to add element to hnsw index \"%s\"", RelationGetRelationName(index));
	GenericXLogFinish(state);
	ItemPointerSet(tid, BufferGetBlockNumber(buf), off);
	UnlockReleaseBuffer(buf);
	HnswSetInsertPage(index, ItemPointerGetBlockNumber(tid));
}

/*
 * The level-lc list of the element at from gets a link to "to": kept if
 * there, else in a free slot, else in place of the farthest neighbor if
 * "to" is nearer.  False when the list did not take it.
 */
static bool
HnswLinkInto(Relation index, ItemPointer from, ItemPointer to, float dist, int lc)
{
	Buffer buf = ReadBuffer(index, ItemPointerGetBlockNumber(from));
	GenericXLogState *state;
	Page page;
	HnswElementTuple et;
	HnswNeighbor *ns;
	uint16 *counts;
	int slots;
	int far = -1;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buf);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(from)));
	if (lc > et->level || et->deleted != HNSW_LIVE)
	{
		UnlockReleaseBuffer(buf);
		return false;
	}
	ns = HnswTupleNeighbors(et, lc);
	counts = HnswTupleCounts(et);
	slots = HnswLevelSlots(et->m, lc);
	for (int i = 0; i < counts[lc]; i++)
	{
		if (ItemPointerEquals(&ns[i].tid, to))
		{
			UnlockReleaseBuffer(buf);
			return true;
		}
		if (far < 0 || ns[i].dist > ns[far].dist)
			far = i;
	}
	if (counts[lc] >= slots && (far < 0 || !(dist < ns[far].dist)))
	{
		UnlockReleaseBuffer(buf);
		return false;
	}
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(from)));
	ns = HnswTupleNeighbors(et, lc);
	counts = HnswTupleCounts(et);
	if (counts[lc] < slots)
		far = counts[lc]++;
	ns[far].tid = *to;
	ns[far].dist = dist;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
	return true;
}

/*
 * Step 3: the new element (tid, vector vec, its own level-lc list newnbrs)
 * joins the level-lc list of the element at nbr: in a free slot, or in
 * place of a neighbor X that is farther than the new element and that the
 * new element links to (the farthest such), so that X stays reachable
 * through the new element.  When there is no such X the list is left
 * alone.  (Replacing the farthest neighbor whatever it is cut the long
 * links that join clusters, the only ones VACUUM's reconnect pass leaves
 * between some groups: 10 inserts after a VACUUM left 141 of 1,400 live
 * elements unreachable in the bv_vector_churn data.)
 *
 * Twins hand over: when the list already holds HNSW_MAX_TWINS neighbors at
 * exactly the new element's distance (copies of it, in practice), the new
 * element takes the place of one of them, X, and links to X itself first.
 * Every element stays reachable (through the new one), the list keeps its
 * other neighbors, and a group of copies becomes a chain rather than lists
 * full of copies with no room for the next one (docs/bv_vector.md).  At
 * most HNSW_MAX_TWINS hand-overs per level and insert (*handovers), so that
 * the new element's own list keeps links out of the group.  A crash
 * between the two writes leaves one extra link.
 */
static void
HnswAddReverseLink(Relation index, const HnswDistance *hd, const Vector *vec, ItemPointer nbr,
				   ItemPointer tid, float dist, int lc, ItemPointerData *newnbrs, int nnew,
				   int *handovers)
{
	Buffer buf = ReadBuffer(index, ItemPointerGetBlockNumber(nbr));
	GenericXLogState *state;
	Page page;
	HnswElementTuple et;
	HnswNeighbor *ns;
	uint16 *counts;
	int slots;
	int same = 0;
	ItemPointerData twin;
	HnswCandidate tc;

	ItemPointerSetInvalid(&twin);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(nbr)));
	if (lc > et->level)
	{
		GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
		return;
	}
	ns = HnswTupleNeighbors(et, lc);
	counts = HnswTupleCounts(et);
	slots = HnswLevelSlots(et->m, lc);
	for (int i = 0; i < Min(counts[lc], slots); i++)
		if (ns[i].dist == dist)
		{
			same++;
			twin = ns[i].tid;
		}
	if (same >= HNSW_MAX_TWINS)
	{
		/* crowded with twins: hand over below */
		GenericXLogAbort(state);
	}
	else if (counts[lc] < slots)
	{
		ns[counts[lc]].tid = *tid;
		ns[counts[lc]].dist = dist;
		counts[lc]++;
		GenericXLogFinish(state);
	}
	else
	{
		int rep = -1;

		/* the farthest neighbor farther than the new element that the new element links to */
		for (int i = 0; i < slots; i++)
			if (ns[i].dist > dist && (rep < 0 || ns[i].dist > ns[rep].dist))
				for (int j = 0; j < nnew; j++)
					if (ItemPointerEquals(&ns[i].tid, &newnbrs[j]))
					{
						rep = i;
						break;
					}
		if (rep >= 0)
		{
			ns[rep].tid = *tid;
			ns[rep].dist = dist;
			GenericXLogFinish(state);
		}
		else
			GenericXLogAbort(state);
	}
	UnlockReleaseBuffer(buf);
	if (same < HNSW_MAX_TWINS || *handovers >= HNSW_MAX_TWINS)
		return;

	/* the hand-over: first the new element links to the twin ... */
	HnswLoadElement(index, &twin, hd, vec, &tc, false, NULL, NULL, 0);
	if (!ItemPointerIsValid(&tc.heaptid) || tc.level < lc ||
		!HnswLinkInto(index, tid, &twin, tc.dist, lc))
		return;
	/* ... then takes its place in the neighbor's list, if it is still there */
	buf = ReadBuffer(index, ItemPointerGetBlockNumber(nbr));
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, ItemPointerGetOffsetNumber(nbr)));
	ns = HnswTupleNeighbors(et, lc);
	counts = HnswTupleCounts(et);
	for (int i = 0; lc <= et->level && i < Min(counts[lc], slots); i++)
		if (ItemPointerEquals(&ns[i].tid, &twin) && ns[i].dist == dist)
		{
			ns[i].tid = *tid;
			(*handovers)++;
			GenericXLogFinish(state);
			state = NULL;
			break;
		}
	if (state != NULL)
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/* step 4: the new element becomes the entry point (caller holds the lock) */
static void
HnswSetEntryPoint(Relation index, ItemPointer tid, int level, int dims)
{
	Buffer buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	GenericXLogState *state;
	HnswMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = HnswPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	if (level > meta->entry_level)
	{
		meta->entry = *tid;
		meta->entry_level = level;
		if (meta->dims == 0)
			meta->dims = dims;
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

/* refuse a vector whose dimensions differ from the index's */
static inline void
HnswCheckIndexDims(Relation index, int expected, int dims)
{
	if (expected != 0 && expected != dims)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_LENGTH_MISMATCH),
				 errmsg("expected %d dimensions, not %d", expected, dims),
				 errdetail("Every vector of hnsw index \"%s\" has %d dimensions.",
						   RelationGetRelationName(index), expected),
				 errhint("Declare the column as vector(%d) so that other sizes are refused on write.",
						 expected)));
}

/* the metapage's largest squared norm grows to n2 (inner-product indexes) */
static void
HnswSetMaxNorm(Relation index, float n2)
{
	Buffer buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	GenericXLogState *state;
	Page page;
	HnswMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	meta = HnswPageGetMeta(page);
	if (n2 > meta->ip_max_norm2)
	{
		meta->ip_max_norm2 = n2;
		HnswMetaCover(page);
		GenericXLogFinish(state);
	}
	else
		GenericXLogAbort(state);
	UnlockReleaseBuffer(buf);
}

void
HnswInsertOnDisk(Relation index, Vector *vec, ItemPointer heaptid, const HnswDistance *callerhd,
				 int m, int efc)
{
	HnswDistance ghd = *callerhd;
	const HnswDistance *hd = &ghd;
	HnswMetaPageData meta;
	LOCKMODE lockmode = ShareLock;
	int level;
	HnswElementTuple et;
	Size size;
	ItemPointerData tid;
	HnswCandidate **found;
	int *nfound;
	HnswCandidate **live; /* found[lc] without deleted elements */
	int **chosen;
	int *nchosen;
	int top;

	LockPage(index, HNSW_UPDATE_LOCK, lockmode);
	HnswReadMeta(index, &meta);
	level = HnswSlotLevel(index, meta.free_page, m);
	if (level < 0)
		level = HnswFitLevel(vec->dim, m, HnswRandomLevel(m, heaptid));
	if (level > meta.entry_level)
	{
		UnlockPage(index, HNSW_UPDATE_LOCK, lockmode);
		lockmode = ExclusiveLock;
		LockPage(index, HNSW_UPDATE_LOCK, lockmode);
		HnswReadMeta(index, &meta);
	}
	HnswCheckIndexDims(index, meta.dims, vec->dim);
	/* inner product: the graph's M is the largest norm, this vector's included */
	if (ghd.kind == HNSW_DIST_MIPS)
	{
		ghd.max_norm2 = Max(ghd.max_norm2, meta.ip_max_norm2);
		HnswGrowNorm(&ghd, vec);
		if (ghd.max_norm2 > meta.ip_max_norm2)
			HnswSetMaxNorm(index, ghd.max_norm2);
	}

	top = Min(level, meta.entry_level);
	found = palloc0(sizeof(HnswCandidate *) * (level + 1));
	nfound = palloc0(sizeof(int) * (level + 1));
	live = palloc0(sizeof(HnswCandidate *) * (level + 1));
	chosen = palloc0(sizeof(int *) * (level + 1));
	nchosen = palloc0(sizeof(int) * (level + 1));

	/* 1. the search */
	if (meta.entry_level >= 0)
	{
		HnswCandidate *eps = palloc(sizeof(HnswCandidate));
		int neps = 1;

		HnswLoadElement(index, &meta.entry, hd, vec, eps, true, NULL, NULL, 0);
		for (int lc = meta.entry_level; lc > top; lc--)
			neps = HnswSearchLayer(index, hd, vec, eps, neps, HNSW_EF_UPPER, lc, true, &eps);
		for (int lc = top; lc >= 0; lc--)
		{
			int mlc = HnswLevelSlots(m, lc);

			int nlive = 0;

			nfound[lc] = HnswSearchLayer(index, hd, vec, eps, neps, efc, lc, true, &found[lc]);
			/* deleted elements are passed through, never linked to (hnswvacuum.c) */
			live[lc] = palloc(sizeof(HnswCandidate) * Max(nfound[lc], 1));
			for (int i = 0; i < nfound[lc]; i++)
				if (ItemPointerIsValid(&found[lc][i].heaptid))
					live[lc][nlive++] = found[lc][i];
			chosen[lc] = palloc(sizeof(int) * mlc);
			nchosen[lc] = HnswSelectNeighbors(hd, vec, live[lc], nlive, mlc, chosen[lc]);
			eps = found[lc];
			neps = nfound[lc];
		}
	}

	/* 2. the element tuple */
	et = HnswFormTuple(vec, m, level, heaptid, &size);
	for (int lc = 0; lc <= top; lc++)
	{
		HnswNeighbor *ns = HnswTupleNeighbors(et, lc);

		for (int i = 0; i < nchosen[lc]; i++)
		{
			ns[i].tid = live[lc][chosen[lc][i]].tid;
			ns[i].dist = live[lc][chosen[lc][i]].dist;
		}
		HnswTupleCounts(et)[lc] = nchosen[lc];
	}
	HnswPlaceTuple(index, et, size, &meta, &tid);

	/* 3. reverse links */
	for (int lc = 0; lc <= top; lc++)
	{
		int handovers = 0;
		ItemPointerData *newnbrs = palloc(sizeof(ItemPointerData) * Max(nchosen[lc], 1));

		for (int i = 0; i < nchosen[lc]; i++)
			newnbrs[i] = live[lc][chosen[lc][i]].tid;
		for (int i = 0; i < nchosen[lc]; i++)
		{
			HnswCandidate *n = &live[lc][chosen[lc][i]];

			HnswAddReverseLink(index, hd, vec, &n->tid, &tid, n->dist, lc, newnbrs, nchosen[lc],
							   &handovers);
		}
	}

	/* 4. the entry point */
	if (level > meta.entry_level)
		HnswSetEntryPoint(index, &tid, level, vec->dim);

	UnlockPage(index, HNSW_UPDATE_LOCK, lockmode);
}

bool
hnswinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
		   Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
		   IndexInfo *indexInfo)
{
	MemoryContext cxt;
	MemoryContext old;
	HnswDistance hd;
	Vector *vec;

	/* nulls are not indexed */
	if (isnull[0])
		return false;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw insert", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	vec = HnswIndexValue(index, values[0]);
	HnswInitGraphDistance(&hd, index, 0); /* M from the metapage: HnswInsertOnDisk */
	if (HnswSkipValue(&hd, vec))
	{
		/* a zero vector under cosine distance is not indexed (bv_vector.h) */
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return false;
	}
	HnswInsertOnDisk(index, vec, heap_tid, &hd, HnswGetM(index), HnswGetEfConstruction(index));
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return false;
}
