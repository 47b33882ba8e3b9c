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
 *      the new element, in a free slot, or in place of its farthest
 *      neighbor when the new element is nearer;
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

/* put the tuple on the insert page, or on a new page; its TID in *tid */
static void
HnswPlaceTuple(Relation index, HnswElementTuple et, Size size, BlockNumber insert_page,
			   ItemPointer tid)
{
	Buffer buf;
	Page page;
	GenericXLogState *state;
	OffsetNumber off;

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

/* step 3: tid joins the level-lc list of the element at nbr */
static void
HnswAddReverseLink(Relation index, ItemPointer nbr, ItemPointer tid, float dist, int lc)
{
	Buffer buf = ReadBuffer(index, ItemPointerGetBlockNumber(nbr));
	GenericXLogState *state;
	Page page;
	HnswElementTuple et;
	HnswNeighbor *ns;
	uint16 *counts;
	int slots;

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
	if (counts[lc] < slots)
	{
		ns[counts[lc]].tid = *tid;
		ns[counts[lc]].dist = dist;
		counts[lc]++;
		GenericXLogFinish(state);
	}
	else
	{
		int far = 0;

		for (int i = 1; i < slots; i++)
			if (ns[i].dist > ns[far].dist)
				far = i;
		if (dist < ns[far].dist)
		{
			ns[far].tid = *tid;
			ns[far].dist = dist;
			GenericXLogFinish(state);
		}
		else
			GenericXLogAbort(state);
	}
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

void
HnswInsertOnDisk(Relation index, Vector *vec, ItemPointer heaptid, const HnswDistance *hd,
				 int m, int efc)
{
	HnswMetaPageData meta;
	LOCKMODE lockmode = ShareLock;
	int level = HnswFitLevel(vec->dim, m, HnswRandomLevel(m));
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
	if (level > meta.entry_level)
	{
		UnlockPage(index, HNSW_UPDATE_LOCK, lockmode);
		lockmode = ExclusiveLock;
		LockPage(index, HNSW_UPDATE_LOCK, lockmode);
		HnswReadMeta(index, &meta);
	}
	HnswCheckIndexDims(index, meta.dims, vec->dim);

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
			nchosen[lc] = HnswSelectNeighbors(hd, live[lc], nlive, mlc, chosen[lc]);
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
	HnswPlaceTuple(index, et, size, meta.insert_page, &tid);

	/* 3. reverse links */
	for (int lc = 0; lc <= top; lc++)
		for (int i = 0; i < nchosen[lc]; i++)
		{
			HnswCandidate *n = &live[lc][chosen[lc][i]];

			HnswAddReverseLink(index, &n->tid, &tid, n->dist, lc);
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
	HnswInitDistance(&hd, index);
	HnswInsertOnDisk(index, vec, heap_tid, &hd, HnswGetM(index), HnswGetEfConstruction(index));
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return false;
}
