/*
 * hnswbuild.c: CREATE INDEX ... USING hnsw.
 *
 * The graph is built in memory, then written to pages in one pass:
 *   1. the heap scan feeds each vector to an in-memory INSERT (the paper's
 *      algorithm on arrays: elements are numbered, neighbor lists hold
 *      numbers and distances, "visited" is an array of epochs, so a search
 *      allocates nothing but its heaps);
 *      Two departures from the paper, both for clustered data: the descent
 *      to a new element's level keeps HNSW_EF_UPPER candidates instead of
 *      one, and before writing, free list slots are filled with reverse
 *      links (BuildSymmetrize); the neighbor lists of new elements keep
 *      pruned connections, re-chosen full lists do not;
 *   2. the graph is laid out on pages (positions first, so that every
 *      neighbor number becomes a TID), written through shared buffers
 *      without WAL, and then WAL-logged page by page with
 *      log_newpage_range, as the server's own index builds do.
 * The graph is charged against maintenance_work_mem.  When it would go over,
 * what is built so far is written to disk as above and the remaining tuples
 * are inserted one by one into the on-disk graph (hnswinsert.c), so a build
 * never fails for lack of memory; it becomes slower, and a NOTICE says so.
 *
 * Progress: pg_stat_progress_create_index shows the heap scan's blocks, the
 * tuples added so far (tuples_done) and a subphase: "building graph",
 * "writing graph", "inserting on disk".
 *
 * Memory: the graph lives in its own context ("hnsw build graph"); each
 * in-memory insert's heaps live in a context reset after every insert.
 * Locking: CREATE INDEX holds the index exclusively; no other backend sees
 * the pages until the build commits.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "access/tableam.h"
#include "access/xloginsert.h"
#include "commands/progress.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "utils/memutils.h"

#define HNSW_PHASE_BUILD  2
#define HNSW_PHASE_WRITE  3
#define HNSW_PHASE_ONDISK 4

/* one element of the in-memory graph */
typedef struct BuildElement
{
	ItemPointerData heaptid;
	uint8 level;
	BlockNumber blk; /* its place on disk, set when written */
	OffsetNumber off;
	uint16 *counts; /* level + 1 list lengths */
	int32 *nbr;     /* neighbor numbers, HnswTotalSlots of them */
	float *ndist;   /* their distances */
	Vector *vec;
} BuildElement;

typedef struct HnswBuildState
{
	Relation heap;
	Relation index;
	HnswDistance hd;
	int m;
	int efc;
	int dims;         /* 0 until the first vector */
	double reltuples; /* heap tuples scanned */
	double indtuples; /* elements added */
	MemoryContext graphCxt;
	MemoryContext tmpCxt;
	BuildElement **elems;
	int n;
	int cap;
	int entry;
	int maxlevel;
	uint32 *visit;
	uint32 epoch;
	Size memused;
	Size memlimit;
	bool ondisk;
} HnswBuildState;

static inline int
SlotOffset(int m, int lc)
{
	return lc == 0 ? 0 : 2 * m + (lc - 1) * m;
}

static inline float
ElemDist(HnswBuildState *bs, int a, int b)
{
	return HnswDist(&bs->hd, bs->elems[a]->vec, bs->elems[b]->vec);
}

static int
HeapItemCmp(const void *a, const void *b)
{
	float ka = ((const HnswHeapItem *) a)->key;
	float kb = ((const HnswHeapItem *) b)->key;

	return ka < kb ? -1 : (ka > kb ? 1 : 0);
}

/* ascending by key: insertion sort for the short lists, qsort beyond */
static inline void
SortItems(HnswHeapItem *items, int n)
{
	if (n > 64)
	{
		qsort(items, n, sizeof(HnswHeapItem), HeapItemCmp);
		return;
	}
	for (int i = 1; i < n; i++)
	{
		HnswHeapItem x = items[i];
		int j = i;

		while (j > 0 && items[j - 1].key > x.key)
		{
			items[j] = items[j - 1];
			j--;
		}
		items[j] = x;
	}
}

/* SEARCH-LAYER in memory; out (room for ef) gets (dist, id) ascending */
static int
BuildSearchLayer(HnswBuildState *bs, const Vector *q, HnswHeapItem *eps, int neps,
				 int ef, int lc, HnswHeapItem *out)
{
	HnswHeap C;
	HnswHeap W;
	int n;

	if (++bs->epoch == 0)
	{
		memset(bs->visit, 0, sizeof(uint32) * bs->cap);
		bs->epoch = 1;
	}
	HnswHeapInit(&C, ef * 4);
	HnswHeapInit(&W, ef + 1);
	for (int i = 0; i < neps; i++)
	{
		bs->visit[eps[i].idx] = bs->epoch;
		HnswHeapPush(&C, eps[i].key, eps[i].idx);
		HnswHeapPush(&W, -eps[i].key, eps[i].idx);
	}
	while (W.n > ef)
		HnswHeapPop(&W);
	while (C.n > 0)
	{
		HnswHeapItem c = HnswHeapPop(&C);
		BuildElement *ce = bs->elems[c.idx];
		int32 *nb = ce->nbr + SlotOffset(bs->m, lc);
		int cnt = ce->counts[lc];

		if (W.n >= ef && c.key > -HnswHeapTop(&W)->key)
			break;
		for (int i = 0; i < cnt; i++)
		{
			int e = nb[i];
			float d;

			if (bs->visit[e] == bs->epoch)
				continue;
			bs->visit[e] = bs->epoch;
			d = HnswDist(&bs->hd, q, bs->elems[e]->vec);
			if (W.n < ef || d < -HnswHeapTop(&W)->key)
			{
				HnswHeapPush(&C, d, e);
				HnswHeapPush(&W, -d, e);
				if (W.n > ef)
					HnswHeapPop(&W);
			}
		}
	}
	/* W pops farthest first: fill out from the end, ascending */
	n = W.n;
	for (int i = n - 1; i >= 0; i--)
	{
		HnswHeapItem it = HnswHeapPop(&W);

		out[i].key = -it.key;
		out[i].idx = it.idx;
	}
	return n;
}

/* element id equals q or one of the k chosen */
static inline bool
BuildIsTwin(HnswBuildState *bs, const Vector *q, int id, HnswHeapItem *chosen, int k)
{
	const Vector *v = bs->elems[id]->vec;

	if (q != NULL && HnswVectorsEqual(v, q))
		return true;
	for (int j = 0; j < k; j++)
		if (HnswVectorsEqual(v, bs->elems[chosen[j].idx]->vec))
			return true;
	return false;
}

/*
 * SELECT-NEIGHBORS-HEURISTIC on (dist, id) sorted ascending, keeping pruned
 * connections: the slots the heuristic leaves free are filled with the
 * nearest candidates it passed over.  Without that, an element at the edge
 * of a cluster loses every incoming link (each neighbor of it has nearer
 * ones in the same direction) and no search can reach it any more.  At most
 * HNSW_MAX_TWINS twins (candidates equal to q or to a chosen one), as on
 * disk (HnswSelectNeighbors).
 */
static int
BuildSelect(HnswBuildState *bs, const Vector *q, HnswHeapItem *cands, int n, int mlc,
			HnswHeapItem *chosen, bool keep_pruned)
{
	int k = 0;
	int npruned = 0;
	int ntwins = 0;
	HnswHeapItem *pruned = palloc(sizeof(HnswHeapItem) * Max(n, 1));

	for (int i = 0; i < n && k < mlc; i++)
	{
		bool good = true;
		bool twin = BuildIsTwin(bs, q, cands[i].idx, chosen, k);

		if (twin && ntwins >= HNSW_MAX_TWINS)
			continue;
		for (int j = 0; j < k; j++)
			if (ElemDist(bs, cands[i].idx, chosen[j].idx) < cands[i].key)
			{
				good = false;
				break;
			}
		if (good)
		{
			chosen[k++] = cands[i];
			ntwins += twin;
		}
		else
			pruned[npruned++] = cands[i];
	}
	for (int i = 0; keep_pruned && i < npruned && k < mlc; i++)
	{
		bool twin = BuildIsTwin(bs, q, pruned[i].idx, chosen, k);

		if (twin && ntwins >= HNSW_MAX_TWINS)
			continue;
		chosen[k++] = pruned[i];
		ntwins += twin;
	}
	pfree(pruned);
	return k;
}

/*
 * "to" joins the level-lc list of from: kept if there, else in a free slot,
 * else in place of the farthest if nearer.  False when the list did not
 * take it.
 */
static bool
BuildLinkInto(HnswBuildState *bs, int from, int to, float d, int lc)
{
	BuildElement *e = bs->elems[from];
	int32 *nb = e->nbr + SlotOffset(bs->m, lc);
	float *nd = e->ndist + SlotOffset(bs->m, lc);
	int far = -1;

	for (int i = 0; i < e->counts[lc]; i++)
	{
		if (nb[i] == to)
			return true;
		if (far < 0 || nd[i] > nd[far])
			far = i;
	}
	if (e->counts[lc] < HnswLevelSlots(bs->m, lc))
		far = e->counts[lc]++;
	else if (far < 0 || !(d < nd[far]))
		return false;
	nb[far] = to;
	nd[far] = d;
	return true;
}

/*
 * The reverse link newid -> nid at lc.  A full list is re-chosen with the
 * heuristic alone (no pruned connections kept): the list then has free
 * slots again, so most reverse links are a plain append; re-choosing a full
 * list on every link made the build 4x slower for no gain in recall.
 *
 * Twins hand over, as on disk (hnswinsert.c): a list that already holds
 * HNSW_MAX_TWINS neighbors at exactly this distance gives the new element
 * the place of one of them, which the new element links to instead; at
 * most HNSW_MAX_TWINS hand-overs per insert and level (*handovers).
 */
static void
BuildAddLink(HnswBuildState *bs, int nid, int newid, float d, int lc, int *handovers)
{
	BuildElement *e = bs->elems[nid];
	int slots = HnswLevelSlots(bs->m, lc);
	int32 *nb = e->nbr + SlotOffset(bs->m, lc);
	float *nd = e->ndist + SlotOffset(bs->m, lc);
	int cnt = e->counts[lc];
	HnswHeapItem *cands;
	HnswHeapItem *chosen;
	int k;
	int same = 0;
	int twin = -1;

	for (int i = 0; i < cnt; i++)
		if (nd[i] == d)
		{
			same++;
			twin = i;
		}
	if (same >= HNSW_MAX_TWINS)
	{
		if (*handovers < HNSW_MAX_TWINS &&
			BuildLinkInto(bs, newid, nb[twin], ElemDist(bs, newid, nb[twin]), lc))
		{
			nb[twin] = newid;
			(*handovers)++;
		}
		return;
	}
	if (cnt < slots)
	{
		nb[cnt] = newid;
		nd[cnt] = d;
		e->counts[lc]++;
		return;
	}
	cands = palloc(sizeof(HnswHeapItem) * (cnt + 1));
	chosen = palloc(sizeof(HnswHeapItem) * slots);
	for (int i = 0; i < cnt; i++)
	{
		cands[i].key = nd[i];
		cands[i].idx = nb[i];
	}
	cands[cnt].key = d;
	cands[cnt].idx = newid;
	SortItems(cands, cnt + 1);
	k = BuildSelect(bs, e->vec, cands, cnt + 1, slots, chosen, false);
	for (int i = 0; i < k; i++)
	{
		nb[i] = chosen[i].idx;
		nd[i] = chosen[i].key;
	}
	e->counts[lc] = k;
}

/* INSERT in memory */
static void
BuildInsertInMemory(HnswBuildState *bs, Vector *vec, ItemPointer heaptid)
{
	int level = HnswFitLevel(vec->dim, bs->m, HnswRandomLevel(bs->m, heaptid));
	int slots = HnswTotalSlots(bs->m, level);
	Size sz = MAXALIGN(sizeof(BuildElement)) + MAXALIGN(sizeof(uint16) * (level + 1)) + MAXALIGN(sizeof(int32) * slots) + MAXALIGN(sizeof(float) * slots) + VECTOR_SIZE(vec->dim);
	char *p = MemoryContextAllocZero(bs->graphCxt, sz);
	BuildElement *e = (BuildElement *) p;
	int id;
	MemoryContext old;

	p += MAXALIGN(sizeof(BuildElement));
	e->counts = (uint16 *) p;
	p += MAXALIGN(sizeof(uint16) * (level + 1));
	e->nbr = (int32 *) p;
	p += MAXALIGN(sizeof(int32) * slots);
	/* cppcheck-suppress invalidPointerCast ; p is MAXALIGNed storage for the float array */
	e->ndist = (float *) p;
	p += MAXALIGN(sizeof(float) * slots);
	e->vec = (Vector *) p;
	memcpy(e->vec, vec, VECTOR_SIZE(vec->dim));
	e->heaptid = *heaptid;
	e->level = level;
	bs->memused += sz + 16; /* the allocator's chunk header */

	if (bs->n == bs->cap)
	{
		int newcap = bs->cap * 2;

		bs->elems = repalloc_huge(bs->elems, sizeof(BuildElement *) * newcap);
		bs->visit = repalloc_huge(bs->visit, sizeof(uint32) * newcap);
		memset(bs->visit + bs->cap, 0, sizeof(uint32) * (newcap - bs->cap));
		bs->memused += (sizeof(BuildElement *) + sizeof(uint32)) * (newcap - bs->cap);
		bs->cap = newcap;
	}
	id = bs->n++;
	bs->elems[id] = e;
	if (id == 0)
	{
		bs->entry = 0;
		bs->maxlevel = level;
		return;
	}

	old = MemoryContextSwitchTo(bs->tmpCxt);
	{
		HnswHeapItem cur = {ElemDist(bs, id, bs->entry), bs->entry};
		HnswHeapItem *W = palloc(sizeof(HnswHeapItem) * Max(bs->efc, HNSW_EF_UPPER));
		HnswHeapItem *sel = palloc(sizeof(HnswHeapItem) * 2 * bs->m);
		HnswHeapItem *eps = palloc(sizeof(HnswHeapItem) * Max(bs->efc, HNSW_EF_UPPER));
		int neps = 1;

		/*
		 * The descent through the levels above the new element's keeps
		 * ef_upper candidates rather than the paper's single one (greedy):
		 * on clustered data a greedy path can enter a cluster through a
		 * part of it that has no links yet to the rest, and the new element
		 * then links only to that part, which keeps the cluster split.
		 */
		eps[0] = cur;
		for (int lc = bs->maxlevel; lc > level; lc--)
		{
			neps = BuildSearchLayer(bs, vec, eps, neps, HNSW_EF_UPPER, lc, W);
			memcpy(eps, W, sizeof(HnswHeapItem) * neps);
		}
		for (int lc = Min(level, bs->maxlevel); lc >= 0; lc--)
		{
			int mlc = HnswLevelSlots(bs->m, lc);
			int nw = BuildSearchLayer(bs, vec, eps, neps, bs->efc, lc, W);
			int k = BuildSelect(bs, vec, W, nw, mlc, sel, true);
			int handovers = 0;

			for (int i = 0; i < k; i++)
			{
				e->nbr[SlotOffset(bs->m, lc) + i] = sel[i].idx;
				e->ndist[SlotOffset(bs->m, lc) + i] = sel[i].key;
			}
			e->counts[lc] = k;
			for (int i = 0; i < k; i++)
				BuildAddLink(bs, sel[i].idx, id, sel[i].key, lc, &handovers);
			memcpy(eps, W, sizeof(HnswHeapItem) * nw);
			neps = nw;
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(bs->tmpCxt);
	if (level > bs->maxlevel)
	{
		bs->entry = id;
		bs->maxlevel = level;
	}
}

static void
HnswInitMetaPage(Page page, int m, int efc)
{
	HnswMetaPage meta;

	HnswInitPage(page);
	meta = HnswPageGetMeta(page);
	meta->magic = HNSW_MAGIC;
	meta->version = HNSW_VERSION;
	meta->dims = 0;
	meta->m = m;
	meta->ef_construction = efc;
	meta->entry_level = -1;
	ItemPointerSetInvalid(&meta->entry);
	meta->insert_page = InvalidBlockNumber;
	meta->free_page = 0;
	meta->ip_max_norm2 = 0;
	((PageHeader) page)->pd_lower = ((char *) meta + sizeof(HnswMetaPageData)) - (char *) page;
}

/* a page of the new index, locked, through shared buffers */
static Buffer
BuildNewPage(HnswBuildState *bs, BlockNumber expected)
{
	Buffer buf = ReadBufferExtended(bs->index, MAIN_FORKNUM, P_NEW, RBM_NORMAL, NULL);

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	if (BufferGetBlockNumber(buf) != expected)
		elog(ERROR, "hnsw build expected block %u, got %u", expected, BufferGetBlockNumber(buf));
	HnswInitPage(BufferGetPage(buf));
	return buf;
}

/*
 * Before writing: every link X -> Y at a level also becomes Y -> X where
 * Y's list has a free slot.  The heuristic leaves lists short, and an
 * element inserted late may have lost every incoming link when its
 * neighbors' lists were re-chosen: searches then pass it by.  Filling free
 * slots with reverse links costs no distance computation (the distance is
 * stored with the link) and no heuristic.
 */
static void
BuildSymmetrize(HnswBuildState *bs)
{
	for (int x = 0; x < bs->n; x++)
	{
		BuildElement *ex = bs->elems[x];

		for (int lc = 0; lc <= ex->level; lc++)
		{
			int32 *nbx = ex->nbr + SlotOffset(bs->m, lc);
			float *ndx = ex->ndist + SlotOffset(bs->m, lc);

			for (int i = 0; i < ex->counts[lc]; i++)
			{
				BuildElement *ey = bs->elems[nbx[i]];
				int32 *nby = ey->nbr + SlotOffset(bs->m, lc);
				float *ndy = ey->ndist + SlotOffset(bs->m, lc);
				int cnt = ey->counts[lc];
				bool found = false;

				if (cnt >= HnswLevelSlots(bs->m, lc))
					continue;
				for (int j = 0; j < cnt && !found; j++)
					found = nby[j] == x;
				if (!found)
				{
					nby[cnt] = x;
					ndy[cnt] = ndx[i];
					ey->counts[lc]++;
				}
			}
		}
		if ((x & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
	}
}

/* write the in-memory graph to pages, WAL-log them, free the graph */
static void
BuildFlush(HnswBuildState *bs)
{
	BlockNumber blk = HNSW_METAPAGE_BLKNO + 1;
	Size freespace = BLCKSZ - SizeOfPageHeaderData;
	OffsetNumber off = 0;
	Buffer buf = InvalidBuffer;
	Buffer metabuf;
	HnswMetaPage meta;

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_WRITE);
	BuildSymmetrize(bs);

	/* positions first: neighbors on later pages need their TIDs */
	for (int i = 0; i < bs->n; i++)
	{
		BuildElement *e = bs->elems[i];
		Size need = MAXALIGN(HnswElementTupleSize(bs->dims, bs->m, e->level)) + sizeof(ItemIdData);

		if (need > freespace)
		{
			blk++;
			freespace = BLCKSZ - SizeOfPageHeaderData;
			off = 0;
		}
		freespace -= need;
		e->blk = blk;
		e->off = ++off;
	}

	for (int i = 0; i < bs->n; i++)
	{
		BuildElement *e = bs->elems[i];
		Size sz;
		HnswElementTuple et = HnswFormTuple(e->vec, bs->m, e->level, &e->heaptid, &sz);

		for (int lc = 0; lc <= e->level; lc++)
		{
			HnswNeighbor *ns = HnswTupleNeighbors(et, lc);

			for (int j = 0; j < e->counts[lc]; j++)
			{
				BuildElement *n = bs->elems[e->nbr[SlotOffset(bs->m, lc) + j]];

				ItemPointerSet(&ns[j].tid, n->blk, n->off);
				ns[j].dist = e->ndist[SlotOffset(bs->m, lc) + j];
			}
			HnswTupleCounts(et)[lc] = e->counts[lc];
		}
		if (!BufferIsValid(buf) || BufferGetBlockNumber(buf) != e->blk)
		{
			if (BufferIsValid(buf))
			{
				MarkBufferDirty(buf);
				UnlockReleaseBuffer(buf);
			}
			buf = BuildNewPage(bs, e->blk);
		}
		if (PageAddItem(BufferGetPage(buf), (Item) et, sz, InvalidOffsetNumber, false, false) != e->off)
			elog(ERROR, "hnsw build misplaced element %d", i);
		pfree(et);
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	if (BufferIsValid(buf))
	{
		MarkBufferDirty(buf);
		UnlockReleaseBuffer(buf);
	}

	metabuf = ReadBuffer(bs->index, HNSW_METAPAGE_BLKNO);
	LockBuffer(metabuf, BUFFER_LOCK_EXCLUSIVE);
	meta = HnswPageGetMeta(BufferGetPage(metabuf));
	meta->dims = bs->dims;
	meta->ip_max_norm2 = bs->hd.max_norm2;
	if (bs->n > 0)
	{
		BuildElement *ep = bs->elems[bs->entry];

		ItemPointerSet(&meta->entry, ep->blk, ep->off);
		meta->entry_level = bs->maxlevel;
		meta->insert_page = blk;
	}
	MarkBufferDirty(metabuf);
	UnlockReleaseBuffer(metabuf);

	if (RelationNeedsWAL(bs->index))
		log_newpage_range(bs->index, MAIN_FORKNUM, 0, RelationGetNumberOfBlocks(bs->index), true);

	MemoryContextDelete(bs->graphCxt);
	bs->graphCxt = NULL;
	bs->elems = NULL;
	bs->visit = NULL;
	bs->n = 0;
}

static void
BuildCallback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			  bool tupleIsAlive, void *state)
{
	HnswBuildState *bs = (HnswBuildState *) state;
	MemoryContext old;
	Vector *vec;

	bs->reltuples++;
	if (isnull[0])
		return;

	old = MemoryContextSwitchTo(bs->tmpCxt);
	vec = HnswIndexValue(index, values[0]);
	if (HnswSkipValue(&bs->hd, vec))
	{
		/* a zero vector under cosine distance is not indexed (bv_vector.h) */
		MemoryContextSwitchTo(old);
		MemoryContextReset(bs->tmpCxt);
		return;
	}
	if (bs->dims == 0)
		bs->dims = vec->dim;
	else if (bs->dims != vec->dim)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_LENGTH_MISMATCH),
				 errmsg("expected %d dimensions, not %d", bs->dims, vec->dim),
				 errdetail("An hnsw index holds vectors of one size."),
				 errhint("Declare the column as vector(n), or index an expression that gives one size.")));

	if (!bs->ondisk && bs->memused + MAXALIGN(sizeof(BuildElement)) + VECTOR_SIZE(vec->dim) + 8 * HnswTotalSlots(bs->m, 1) > bs->memlimit)
	{
		ereport(NOTICE,
				(errmsg("hnsw graph no longer fits in maintenance_work_mem"),
				 errdetail("After %.0f tuples the graph built so far is written to the index; the other tuples are inserted one by one, which is slower.",
						   bs->indtuples),
				 errhint("Increase maintenance_work_mem to build faster.")));
		MemoryContextSwitchTo(old);
		BuildFlush(bs);
		bs->ondisk = true;
		pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_ONDISK);
		old = MemoryContextSwitchTo(bs->tmpCxt);
	}

	HnswGrowNorm(&bs->hd, vec); /* M grows as rows arrive */
	if (bs->ondisk)
	{
		HnswInsertOnDisk(index, vec, tid, &bs->hd, bs->m, bs->efc);
		MemoryContextSwitchTo(old);
		MemoryContextReset(bs->tmpCxt);
	}
	else
	{
		MemoryContextSwitchTo(old);
		/* the vector is copied into the graph; tmpCxt is reset by the insert */
		BuildInsertInMemory(bs, vec, tid);
	}
	bs->indtuples++;
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) bs->indtuples);
}

static void
CheckOptions(Relation index, int m, int efc)
{
	if (efc < 2 * m)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ef_construction must be at least 2 * m"),
				 errdetail("ef_construction is %d and m is %d.", efc, m),
				 errhint("Raise ef_construction to %d or more, or lower m.", 2 * m)));
}

IndexBuildResult *
hnswbuild(Relation heap, Relation index, IndexInfo *indexInfo)
{
	HnswBuildState bs;
	IndexBuildResult *result;
	Buffer metabuf;
	int32 typmod = TupleDescAttr(RelationGetDescr(index), 0)->atttypmod;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));

	memset(&bs, 0, sizeof(bs));
	bs.heap = heap;
	bs.index = index;
	bs.m = HnswGetM(index);
	bs.efc = HnswGetEfConstruction(index);
	CheckOptions(index, bs.m, bs.efc);
	if (typmod > 0)
		HnswCheckDims(index, typmod, bs.m);
	HnswInitGraphDistance(&bs.hd, index, 0);
	bs.memlimit = (Size) maintenance_work_mem * 1024;
	bs.graphCxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw build graph",
										ALLOCSET_DEFAULT_SIZES);
	bs.tmpCxt = AllocSetContextCreate(CurrentMemoryContext, "hnsw build insert",
									  ALLOCSET_DEFAULT_SIZES);
	bs.cap = 1024;
	bs.elems = MemoryContextAlloc(bs.graphCxt, sizeof(BuildElement *) * bs.cap);
	bs.visit = MemoryContextAllocZero(bs.graphCxt, sizeof(uint32) * bs.cap);
	bs.entry = -1;
	bs.maxlevel = -1;

	metabuf = BuildNewPage(&bs, HNSW_METAPAGE_BLKNO);
	HnswInitMetaPage(BufferGetPage(metabuf), bs.m, bs.efc);
	MarkBufferDirty(metabuf);
	UnlockReleaseBuffer(metabuf);

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, HNSW_PHASE_BUILD);
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL,
								 (int64) Max(heap->rd_rel->reltuples, 0));
	table_index_build_scan(heap, index, indexInfo, true, true, BuildCallback, &bs, NULL);

	if (!bs.ondisk)
		BuildFlush(&bs);
	MemoryContextDelete(bs.tmpCxt);

	result = palloc(sizeof(IndexBuildResult));
	result->heap_tuples = bs.reltuples;
	result->index_tuples = bs.indtuples;
	return result;
}

/*
 * The init fork of an unlogged index: an empty metapage, WAL-logged as a
 * full page (generic WAL would skip it: the relation itself is not logged).
 */
void
hnswbuildempty(Relation index)
{
	Buffer buf = ReadBufferExtended(index, INIT_FORKNUM, P_NEW, RBM_NORMAL, NULL);

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	START_CRIT_SECTION();
	HnswInitMetaPage(BufferGetPage(buf), HnswGetM(index), HnswGetEfConstruction(index));
	MarkBufferDirty(buf);
	log_newpage_buffer(buf, true);
	END_CRIT_SECTION();
	UnlockReleaseBuffer(buf);
}
