/*
 * hnswutils.c: what the hnsw build, insert and scan paths share.
 *
 *   - the distance function of an index (HnswInitDistance): the opclass's
 *     support function 1, called directly when it is one of ours;
 *   - levels: the random level of a new element (the paper's
 *     floor(-ln(U) * mL), mL = 1 / ln(m)), capped so the tuple fits a page;
 *   - the metapage and page helpers;
 *   - reading one element tuple under a share lock (HnswLoadElement) and the
 *     on-disk greedy search of one layer (HnswSearchLayer, the paper's
 *     SEARCH-LAYER) with the neighbor-selection heuristic (the paper's
 *     SELECT-NEIGHBORS-HEURISTIC with keepPrunedConnections, without
 *     extending candidates);
 *   - small containers: a binary heap and a hash set of 64-bit keys.
 *
 * Locking: buffers are locked one at a time and only for as long as it
 * takes to copy out what is needed, so a reader never waits on more than one
 * page and never holds a lock while computing more than one distance.
 * Memory: everything is palloc'd in the caller's current context; callers
 * run searches in a context they reset.
 */
#include "postgres.h"

#include "bv_vector.h"

#include "access/relscan.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/bufpage.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"

/* ---- a hash set of uint64 keys (lib/simplehash.h) ---- */

typedef struct HnswTidSetEntry
{
	uint64 key;
	char status;
} HnswTidSetEntry;

#define SH_PREFIX            tidset
#define SH_ELEMENT_TYPE      HnswTidSetEntry
#define SH_KEY_TYPE          uint64
#define SH_KEY               key
#define SH_HASH_KEY(tb, key) murmurhash32((uint32) ((key) ^ ((key) >> 32)))
#define SH_EQUAL(tb, a, b)   ((a) == (b))
#define SH_SCOPE             static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

struct HnswTidSet
{
	tidset_hash *h;
};

HnswTidSet *
HnswTidSetCreate(MemoryContext cxt, uint32 size)
{
	HnswTidSet *set = MemoryContextAlloc(cxt, sizeof(HnswTidSet));

	set->h = tidset_create(cxt, size, NULL);
	return set;
}

bool
HnswTidSetAdd(HnswTidSet *set, uint64 key)
{
	bool found;

	tidset_insert(set->h, key, &found);
	return !found;
}

bool
HnswTidSetContains(HnswTidSet *set, uint64 key)
{
	return tidset_lookup(set->h, key) != NULL;
}

/* ---- a binary min-heap ---- */

void
HnswHeapInit(HnswHeap *h, int cap)
{
	h->cap = Max(cap, 16);
	h->n = 0;
	h->items = palloc(sizeof(HnswHeapItem) * h->cap);
}

void
HnswHeapPush(HnswHeap *h, float key, int32 idx)
{
	int i;

	if (h->n == h->cap)
	{
		h->cap *= 2;
		h->items = repalloc(h->items, sizeof(HnswHeapItem) * h->cap);
	}
	i = h->n++;
	while (i > 0)
	{
		int parent = (i - 1) / 2;

		if (h->items[parent].key <= key)
			break;
		h->items[i] = h->items[parent];
		i = parent;
	}
	h->items[i].key = key;
	h->items[i].idx = idx;
}

HnswHeapItem
HnswHeapPop(HnswHeap *h)
{
	HnswHeapItem top = h->items[0];
	HnswHeapItem last = h->items[--h->n];
	int i = 0;

	for (;;)
	{
		int c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->items[c + 1].key < h->items[c].key)
			c++;
		if (last.key <= h->items[c].key)
			break;
		h->items[i] = h->items[c];
		i = c;
	}
	if (h->n > 0)
		h->items[i] = last;
	return top;
}

/* ---- distance ---- */

void
HnswInitDistance(HnswDistance *hd, Relation index)
{
	FmgrInfo *proc = index_getprocinfo(index, 1, 1);

	hd->max_norm2 = 0;
	hd->proc = proc;
	hd->collation = index->rd_indcollation[0];
	if (proc->fn_addr == vector_l2_squared_distance)
		hd->kind = HNSW_DIST_L2SQ;
	else if (proc->fn_addr == negative_inner_product)
		hd->kind = HNSW_DIST_NEG_IP;
	else if (proc->fn_addr == cosine_distance)
		hd->kind = HNSW_DIST_COSINE;
	else
		hd->kind = HNSW_DIST_FMGR;
}

/*
 * The distance the graph is built with (build, insert, VACUUM's repairs):
 * the scan's distance, except for inner product, whose graph is built by
 * HnswMipsDistance with M^2 = max_norm2 (bv_vector.h).  Scans keep
 * HnswInitDistance: on a query that order is the inner product's.
 */
void
HnswInitGraphDistance(HnswDistance *hd, Relation index, float max_norm2)
{
	HnswInitDistance(hd, index);
	if (hd->kind == HNSW_DIST_NEG_IP)
	{
		hd->kind = HNSW_DIST_MIPS;
		hd->max_norm2 = max_norm2;
	}
}

/* ---- levels and sizes ---- */

/*
 * The level of the element for heaptid: -ln(u) / ln(m) floored, the paper's
 * distribution, with u drawn from a hash of the heap TID rather than from a
 * random generator.  Levels only need to be independent of the vectors, and
 * a TID is; this way the same rows inserted the same way give the same
 * graph, and a test that fails once fails every time.
 */
#define HNSW_LEVEL_SEED UINT64CONST(0x42564857) /* fixed: same rows, same levels */

int
HnswRandomLevel(int m, ItemPointer heaptid)
{
	uint64 key = HnswTidKey(heaptid);
	uint64 h = hash_bytes_extended((const unsigned char *) &key, sizeof(key), HNSW_LEVEL_SEED);
	double u = (double) (h >> 11) * (1.0 / (double) (UINT64CONST(1) << 53));
	double ml = 1 / log(m);
	int level;

	if (u <= 0)
		u = DBL_MIN;
	level = (int) floor(-log(u) * ml);
	return Min(level, HNSW_MAX_LEVEL);
}

/* the highest level <= level whose tuple fits a page (-1: not even level 0) */
int
HnswFitLevel(int dims, int m, int level)
{
	while (level >= 0 && HnswElementTupleSize(dims, m, level) > HNSW_MAX_TUPLE_SIZE)
		level--;
	return level;
}

/* refuse vectors whose element tuple cannot fit a page */
void
HnswCheckDims(Relation index, int dims, int m)
{
	if (HnswFitLevel(dims, m, 0) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("vector of %d dimensions is too large for hnsw index \"%s\"",
						dims, RelationGetRelationName(index)),
				 errdetail("An element tuple needs %zu bytes with m = %d; a page holds %zu.",
						   HnswElementTupleSize(dims, m, 0), m, (Size) HNSW_MAX_TUPLE_SIZE),
				 errhint("Index fewer dimensions (for example a projection), or use a smaller m.")));
}

/* the indexed vector, detoasted, checked against the index's limits */
Vector *
HnswIndexValue(Relation index, Datum value)
{
	Vector *v = DatumGetVector(value);

	HnswCheckDims(index, v->dim, HnswGetM(index));
	return v;
}

/* ---- pages ---- */

void
HnswInitPage(Page page)
{
	PageInit(page, BLCKSZ, 0);
}

void
HnswReadMeta(Relation index, HnswMetaPageData *meta)
{
	Buffer buf = ReadBuffer(index, HNSW_METAPAGE_BLKNO);
	HnswMetaPage m;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	m = HnswPageGetMeta(BufferGetPage(buf));
	if (m->magic != HNSW_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" is not a bv_vector hnsw index", RelationGetRelationName(index)),
				 errdetail("The metapage has magic number %08x.", m->magic),
				 errhint("REINDEX the index.")));
	if (m->version != HNSW_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("hnsw index \"%s\" has unsupported version %u",
						RelationGetRelationName(index), m->version),
				 errhint("REINDEX the index.")));
	*meta = *m;
	UnlockReleaseBuffer(buf);
}

/*
 * Make the metapage's pd_lower cover the whole HnswMetaPageData: fields
 * added after 0.2.0 (free_page) lie past the pd_lower of older indexes, and
 * generic WAL neither logs nor keeps what lies between pd_lower and
 * pd_upper.  Call on the page registered with GenericXLogRegisterBuffer.
 */
void
HnswMetaCover(Page metapage)
{
	PageHeader ph = (PageHeader) metapage;
	LocationIndex end = ((char *) HnswPageGetMeta(metapage) + sizeof(HnswMetaPageData)) - (char *) metapage;

	if (ph->pd_lower < end)
		ph->pd_lower = end;
}

/* a new, exclusively locked page at the end of the relation */
Buffer
HnswNewBuffer(Relation index, ForkNumber forknum)
{
	Buffer buf;

	LockRelationForExtension(index, ExclusiveLock);
	buf = ReadBufferExtended(index, forknum, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	UnlockRelationForExtension(index, ExclusiveLock);
	return buf;
}

static void
HnswCorrupt(Relation index, ItemPointer tid)
{
	ereport(ERROR,
			(errcode(ERRCODE_INDEX_CORRUPTED),
			 errmsg("hnsw index \"%s\" points to a missing element at (%u,%u)",
					RelationGetRelationName(index),
					ItemPointerGetBlockNumberNoCheck(tid),
					ItemPointerGetOffsetNumberNoCheck(tid)),
			 errhint("REINDEX the index; bv_vector.hnsw_check() describes the damage.")));
}

/*
 * Read the element at tid: its distance to q (unless q is NULL), its heap TID and level, a copy
 * of its vector (copyvec) and, when nbrs is given, the TIDs of its neighbors
 * at level lc.
 */
bool
HnswLoadElement(Relation index, ItemPointer tid, const HnswDistance *hd, const Vector *q,
				HnswCandidate *c, bool copyvec, ItemPointerData *nbrs, int *nnbrs, int lc)
{
	BlockNumber blk = ItemPointerGetBlockNumber(tid);
	OffsetNumber off = ItemPointerGetOffsetNumber(tid);
	Buffer buf;
	Page page;
	HnswElementTuple et;
	Vector *v;

	/* (a block past the end fails in ReadBuffer; no lseek per element here) */
	if (blk == HNSW_METAPAGE_BLKNO)
		HnswCorrupt(index, tid);
	buf = ReadBuffer(index, blk);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (PageIsNew(page) || off < FirstOffsetNumber || off > PageGetMaxOffsetNumber(page))
	{
		UnlockReleaseBuffer(buf);
		HnswCorrupt(index, tid);
	}
	et = (HnswElementTuple) PageGetItem(page, PageGetItemId(page, off));
	v = HnswTupleVector(et);
	if (q != NULL && v->dim != q->dim)
	{
		int dim = v->dim;

		UnlockReleaseBuffer(buf);
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("hnsw index \"%s\" holds a vector of %d dimensions, expected %d",
						RelationGetRelationName(index), dim, q->dim),
				 errhint("REINDEX the index.")));
	}
	c->dist = q != NULL ? HnswDist(hd, q, v) : 0;
	c->tid = *tid;
	c->heaptid = et->heaptid;
	c->level = et->level;
	c->vec = NULL;
	if (copyvec)
	{
		c->vec = palloc(VECTOR_SIZE(v->dim));
		memcpy(c->vec, v, VECTOR_SIZE(v->dim));
	}
	if (nbrs != NULL)
	{
		*nnbrs = 0;
		if (lc <= et->level)
		{
			HnswNeighbor *ns = HnswTupleNeighbors(et, lc);
			int n = Min(HnswTupleCounts(et)[lc], HnswLevelSlots(et->m, lc));

			for (int i = 0; i < n; i++)
				nbrs[i] = ns[i].tid;
			*nnbrs = n;
		}
	}
	UnlockReleaseBuffer(buf);
	return true;
}

/* cands[i] equals q or one of the n chosen candidates */
static inline bool
IsTwin(const Vector *q, HnswCandidate *cands, const int *chosen, int n, int i)
{
	if (q != NULL && HnswVectorsEqual(cands[i].vec, q))
		return true;
	for (int j = 0; j < n; j++)
		if (HnswVectorsEqual(cands[i].vec, cands[chosen[j]].vec))
			return true;
	return false;
}

static int
CandidateCmp(const void *a, const void *b)
{
	float da = ((const HnswCandidate *) a)->dist;
	float db = ((const HnswCandidate *) b)->dist;

	return da < db ? -1 : (da > db ? 1 : 0);
}

/*
 * SEARCH-LAYER on disk: the ef nearest elements to q at level lc reachable
 * from the entries, sorted by distance, in *result; returns their number.
 */
int
HnswSearchLayer(Relation index, const HnswDistance *hd, const Vector *q,
				HnswCandidate *entries, int nentries, int ef, int lc,
				bool copyvec, HnswCandidate **result)
{
	HnswTidSet *visited = HnswTidSetCreate(CurrentMemoryContext, 256);
	int cap = 64;
	int n = 0;
	HnswCandidate *cands = palloc(sizeof(HnswCandidate) * cap);
	HnswHeap C; /* candidates, nearest first */
	HnswHeap W; /* results, farthest first (-dist) */
	ItemPointerData *nbrs = palloc(sizeof(ItemPointerData) * 2 * HNSW_MAX_M);
	int nn;
	HnswCandidate *out;

	HnswHeapInit(&C, ef * 2);
	HnswHeapInit(&W, ef + 1);
	for (int i = 0; i < nentries; i++)
	{
		if (!HnswTidSetAdd(visited, HnswTidKey(&entries[i].tid)))
			continue;
		if (n == cap)
			cands = repalloc(cands, sizeof(HnswCandidate) * (cap *= 2));
		cands[n] = entries[i];
		HnswHeapPush(&C, cands[n].dist, n);
		HnswHeapPush(&W, -cands[n].dist, n);
		n++;
	}
	while (W.n > ef)
		HnswHeapPop(&W);

	while (C.n > 0)
	{
		HnswHeapItem c = HnswHeapPop(&C);
		HnswCandidate tmp;

		if (W.n >= ef && c.key > -HnswHeapTop(&W)->key)
			break;
		CHECK_FOR_INTERRUPTS();
		HnswLoadElement(index, &cands[c.idx].tid, hd, NULL, &tmp, false, nbrs, &nn, lc);
		for (int i = 0; i < nn; i++)
		{
			HnswCandidate *e;

			if (!HnswTidSetAdd(visited, HnswTidKey(&nbrs[i])))
				continue;
			if (n == cap)
				cands = repalloc(cands, sizeof(HnswCandidate) * (cap *= 2));
			e = &cands[n];
			HnswLoadElement(index, &nbrs[i], hd, q, e, copyvec, NULL, NULL, lc);
			if (W.n < ef || e->dist < -HnswHeapTop(&W)->key)
			{
				HnswHeapPush(&C, e->dist, n);
				HnswHeapPush(&W, -e->dist, n);
				if (W.n > ef)
					HnswHeapPop(&W);
			}
			else if (e->vec)
			{
				pfree(e->vec);
				e->vec = NULL;
			}
			n++;
		}
	}

	out = palloc(sizeof(HnswCandidate) * Max(W.n, 1));
	nn = W.n;
	for (int i = 0; i < nn; i++)
		out[i] = cands[W.items[i].idx];
	qsort(out, nn, sizeof(HnswCandidate), CandidateCmp);
	*result = out;
	return nn;
}

/*
 * SELECT-NEIGHBORS-HEURISTIC: from candidates sorted by distance to q (with
 * vectors), keep one only if it is nearer to q than to every neighbor kept
 * so far; at most m; free slots are then filled with the nearest candidates
 * passed over (the paper's keepPrunedConnections).  Writes the indexes of
 * the kept candidates to chosen; returns their number.
 *
 * Twins: a candidate equal to q or to a kept neighbor is a twin, and at
 * most HNSW_MAX_TWINS twins are kept.  The heuristic keeps every twin of q
 * (a distance of 0 is never below another), so without the cap a list of
 * an element with many copies fills with copies and loses its links to the
 * rest of the graph, and copies inserted later find every list full of
 * equally near copies.
 */
int
HnswSelectNeighbors(const HnswDistance *hd, const Vector *q, HnswCandidate *cands, int ncands,
					int m, int *chosen)
{
	int n = 0;
	int npruned = 0;
	int ntwins = 0;
	int *pruned = palloc(sizeof(int) * Max(ncands, 1));

	for (int i = 0; i < ncands && n < m; i++)
	{
		bool good = true;
		bool twin = IsTwin(q, cands, chosen, n, i);

		if (twin && ntwins >= HNSW_MAX_TWINS)
			continue;
		for (int j = 0; j < n; j++)
		{
			if (HnswDist(hd, cands[i].vec, cands[chosen[j]].vec) < cands[i].dist)
			{
				good = false;
				break;
			}
		}
		if (good)
		{
			chosen[n++] = i;
			ntwins += twin;
		}
		else
			pruned[npruned++] = i;
	}
	/* keep pruned connections, as the build does (hnswbuild.c) */
	for (int i = 0; i < npruned && n < m; i++)
	{
		bool twin = IsTwin(q, cands, chosen, n, pruned[i]);

		if (twin && ntwins >= HNSW_MAX_TWINS)
			continue;
		chosen[n++] = pruned[i];
		ntwins += twin;
	}
	pfree(pruned);
	return n;
}
