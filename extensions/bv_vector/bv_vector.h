/*
 * bv_vector.h: the vector type and the hnsw index access method.
 *
 * One header for the extension.  It declares
 *   - the on-disk/in-memory layout of a vector (a varlena of float4) and the
 *     distance kernels every file uses (static inline so that the compiler
 *     vectorizes them where they are called);
 *   - the hnsw index: its limits (which feed the reloptions and the checks),
 *     the page and element-tuple layout, and the functions the AM files share.
 *
 * The hnsw index stores one element tuple per indexed heap tuple.  An element
 * tuple holds its level, a deleted flag, its heap TID, one neighbor list per
 * level (fixed size: 2m slots at level 0, m above, so that updating a list
 * never changes the tuple's size) and the vector.  Block 0 is the metapage
 * (entry point, dimensions, parameters, the page to insert into).
 */
#ifndef BV_VECTOR_H
#define BV_VECTOR_H

#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/reloptions.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "utils/float.h"
#include "utils/relcache.h"

/* ---- the vector type ---- */

#define VECTOR_MAX_DIM 16000

typedef struct Vector
{
	int32 vl_len_; /* varlena header (do not touch directly) */
	int16 dim;     /* number of dimensions */
	int16 unused;  /* reserved, always zero */
	float x[FLEXIBLE_ARRAY_MEMBER];
} Vector;

#define VECTOR_SIZE(dim)      (offsetof(Vector, x) + sizeof(float) * (dim))
#define DatumGetVector(x)     ((Vector *) PG_DETOAST_DATUM(x))
#define PG_GETARG_VECTOR_P(x) DatumGetVector(PG_GETARG_DATUM(x))
#define PG_RETURN_VECTOR_P(x) PG_RETURN_POINTER(x)

extern Vector *InitVector(int dim);
extern Datum vector_l2_squared_distance(PG_FUNCTION_ARGS);
extern Datum negative_inner_product(PG_FUNCTION_ARGS);
extern Datum cosine_distance(PG_FUNCTION_ARGS);

/*
 * Distance kernels (vector.c): float accumulation in 8-wide vectors, built
 * twice on x86-64 (AVX2 + FMA, and the baseline SSE2) with the loader
 * choosing at run time.
 */
extern float VectorL2SquaredKernel(int dim, const float *a, const float *b);
extern float VectorDotKernel(int dim, const float *a, const float *b);
extern double VectorCosineKernel(int dim, const float *a, const float *b);

/* ---- hnsw: limits and defaults, declared once ---- */

#define HNSW_DEFAULT_M               16
#define HNSW_MIN_M                   2
#define HNSW_MAX_M                   100
#define HNSW_DEFAULT_EF_CONSTRUCTION 64
#define HNSW_MIN_EF_CONSTRUCTION     4
#define HNSW_MAX_EF_CONSTRUCTION     1000
#define HNSW_DEFAULT_EF_SEARCH       40
#define HNSW_MIN_EF_SEARCH           1
#define HNSW_MAX_EF_SEARCH           1000
#define HNSW_MAX_LEVEL               15
/* candidates kept per layer while an insert descends to its own level */
#define HNSW_EF_UPPER 16
/*
 * Identical vectors ("twins") a neighbor list takes at most (hnswutils.c):
 * beyond that a new twin hands over, it does not crowd the list.
 */
#define HNSW_MAX_TWINS 3
/* pages an insert looks through for a free element slot before appending */
#define HNSW_REUSE_PAGES 8

#define HNSW_MAGIC          0x42564857 /* "BVHW" */
#define HNSW_VERSION        1
#define HNSW_METAPAGE_BLKNO 0

/* the heavyweight lock that orders entry-point changes (LockPage on block 0) */
#define HNSW_UPDATE_LOCK 0

/* distance kinds the index computes directly (others go through fmgr) */
typedef enum HnswDistKind
{
	HNSW_DIST_FMGR = 0,
	HNSW_DIST_L2SQ,
	HNSW_DIST_NEG_IP,
	HNSW_DIST_COSINE,
	HNSW_DIST_MIPS /* the graph of an inner-product index (HnswInitGraphDistance) */
} HnswDistKind;

typedef struct HnswOptions
{
	int32 vl_len_;
	int m;
	int ef_construction;
} HnswOptions;

typedef struct HnswMetaPageData
{
	uint32 magic;
	uint32 version;
	int32 dims; /* 0 until the first vector is indexed */
	int32 m;
	int32 ef_construction;
	int32 entry_level;       /* -1 when the index is empty */
	ItemPointerData entry;   /* the entry point's element tuple */
	BlockNumber insert_page; /* last page, where new elements go */
	/*
	 * The first page that may hold a free element slot (hnswvacuum.c), or
	 * 0 when none is known.  0.2.0 indexes end before this field: their
	 * metapage reads 0 here until a VACUUM sets it (pd_lower is moved).
	 */
	BlockNumber free_page;
	/*
	 * Inner-product indexes: the largest squared norm indexed so far (the
	 * M^2 of the graph distance, HnswInitGraphDistance); 0 in other indexes
	 * and in those built before 0.3.0's library.
	 */
	float ip_max_norm2;
} HnswMetaPageData;

typedef HnswMetaPageData *HnswMetaPage;

/* one slot of a neighbor list: the neighbor's element tuple and its distance */
typedef struct HnswNeighbor
{
	ItemPointerData tid;
	float dist;
} HnswNeighbor;

/*
 * An element tuple: this header, then uint16 counts[level + 1] padded to 4
 * bytes, then the neighbor slots (level 0: 2m, levels 1..level: m each),
 * then the vector.  Sizes are fixed at creation.
 */
/* HnswElementTupleData.deleted */
#define HNSW_LIVE    0 /* indexes a heap tuple */
#define HNSW_DELETED 1 /* its heap tuple is gone; links to it may remain */
#define HNSW_FREE    2 /* repaired around, no link to it: an insert may take the slot */

typedef struct HnswElementTupleData
{
	uint8 level;
	uint8 deleted;           /* HNSW_LIVE, HNSW_DELETED or HNSW_FREE */
	uint16 m;                /* the m this tuple was laid out with */
	ItemPointerData heaptid; /* invalid once deleted */
	uint16 unused;
} HnswElementTupleData;

typedef HnswElementTupleData *HnswElementTuple;

static inline int
HnswLevelSlots(int m, int level)
{
	return level == 0 ? 2 * m : m;
}

static inline int
HnswTotalSlots(int m, int level)
{
	return 2 * m + level * m;
}

static inline Size
HnswCountsSize(int level)
{
	return TYPEALIGN(4, sizeof(uint16) * (level + 1));
}

static inline Size
HnswElementTupleSize(int dims, int m, int level)
{
	return sizeof(HnswElementTupleData) + HnswCountsSize(level) + sizeof(HnswNeighbor) * HnswTotalSlots(m, level) + VECTOR_SIZE(dims);
}

static inline uint16 *
HnswTupleCounts(HnswElementTuple t)
{
	return (uint16 *) ((char *) t + sizeof(HnswElementTupleData));
}

/* the first slot of level lc's neighbor list */
static inline HnswNeighbor *
HnswTupleNeighbors(HnswElementTuple t, int lc)
{
	HnswNeighbor *base = (HnswNeighbor *) ((char *) t + sizeof(HnswElementTupleData) + HnswCountsSize(t->level));

	return lc == 0 ? base : base + 2 * t->m + (lc - 1) * t->m;
}

static inline Vector *
HnswTupleVector(HnswElementTuple t)
{
	return (Vector *) ((char *) t + sizeof(HnswElementTupleData) + HnswCountsSize(t->level) + sizeof(HnswNeighbor) * HnswTotalSlots(t->m, t->level));
}

/* the largest tuple a page takes */
#define HNSW_MAX_TUPLE_SIZE \
	(BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - sizeof(ItemIdData))

#define HnswPageGetMeta(page) ((HnswMetaPage) PageGetContents(page))

/* TIDs as 64-bit keys for hash sets */
static inline uint64
HnswTidKey(ItemPointer tid)
{
	return ((uint64) ItemPointerGetBlockNumberNoCheck(tid) << 16) | ItemPointerGetOffsetNumberNoCheck(tid);
}

/*
 * The distance function of an index, resolved once per build, insert or
 * scan.  Distances inside the index are float; NaN (cosine with a zero
 * vector) becomes +infinity so that heaps stay ordered.
 */
typedef struct HnswDistance
{
	HnswDistKind kind;
	FmgrInfo *proc;
	Oid collation;
	float max_norm2; /* HNSW_DIST_MIPS: M^2, the largest squared norm known */
} HnswDistance;

extern void HnswInitDistance(HnswDistance *hd, Relation index);
extern void HnswInitGraphDistance(HnswDistance *hd, Relation index, float max_norm2);

/*
 * The graph distance of an inner-product index: the squared L2 distance
 * between [a, sqrt(M^2 - |a|^2)] and [b, sqrt(M^2 - |b|^2)] (the usual
 * reduction of maximum inner product search to L2).  For a query [q, 0]
 * that distance is |q|^2 + M^2 - 2 q.b: ordered as -q.b, so scans walk the
 * graph by the inner product itself, and the graph is built by a metric,
 * which reaches every element.  M^2 is HNSW_MIPS_SLACK times the largest
 * squared norm: with M the largest norm itself the extra coordinate
 * dominated the distances between small vectors and recall@10 of <#> on
 * the recall test's data was 0.91; at 1.5, 2 and 3 times it was 0.99 (at
 * 100 times, close to a plain L2 graph, 0.98).  See ADR 0040.
 */
#define HNSW_MIPS_SLACK 2.0
static inline float
HnswMipsDistance(float max_norm2, const Vector *a, const Vector *b)
{
	double na = VectorDotKernel(a->dim, a->x, a->x);
	double nb = VectorDotKernel(b->dim, b->x, b->x);
	double m2 = HNSW_MIPS_SLACK * Max((double) max_norm2, Max(na, nb));
	double ea = sqrt(m2 - na);
	double eb = sqrt(m2 - nb);

	return VectorL2SquaredKernel(a->dim, a->x, b->x) + (float) ((ea - eb) * (ea - eb));
}

/* the running M^2 of a graph distance grows to take vec's norm; true if it grew */
static inline bool
HnswGrowNorm(HnswDistance *hd, const Vector *v)
{
	float n2;

	if (hd->kind != HNSW_DIST_MIPS)
		return false;
	n2 = VectorDotKernel(v->dim, v->x, v->x);
	if (!(n2 > hd->max_norm2) || isinf(n2))
		return false;
	hd->max_norm2 = n2;
	return true;
}

/* two vectors with the same values (memcmp stops at the first difference) */
static inline bool
HnswVectorsEqual(const Vector *a, const Vector *b)
{
	return a->dim == b->dim && memcmp(a->x, b->x, sizeof(float) * a->dim) == 0;
}

/* all zeros: its cosine distance to anything is undefined */
static inline bool
HnswVectorIsZero(const Vector *v)
{
	for (int i = 0; i < v->dim; i++)
		if (v->x[i] != 0)
			return false;
	return true;
}

/*
 * A value the index does not hold: a zero vector under cosine distance
 * (every distance to it is NaN; see docs/bv_vector.md).  A scan with such a
 * query returns no rows, as a NULL in the index's column is not indexed.
 */
static inline bool
HnswSkipValue(const HnswDistance *hd, const Vector *v)
{
	return hd->kind == HNSW_DIST_COSINE && HnswVectorIsZero(v);
}

static inline float
HnswDist(const HnswDistance *hd, const Vector *a, const Vector *b)
{
	float d;

	switch (hd->kind)
	{
		case HNSW_DIST_L2SQ:
			d = VectorL2SquaredKernel(a->dim, a->x, b->x);
			break;
		case HNSW_DIST_NEG_IP:
			d = -VectorDotKernel(a->dim, a->x, b->x);
			break;
		case HNSW_DIST_COSINE:
			d = (float) VectorCosineKernel(a->dim, a->x, b->x);
			break;
		case HNSW_DIST_MIPS:
			d = HnswMipsDistance(hd->max_norm2, a, b);
			break;
		default:
			d = (float) DatumGetFloat8(FunctionCall2Coll(hd->proc, hd->collation,
														 PointerGetDatum(a),
														 PointerGetDatum(b)));
			break;
	}
	return isnan(d) ? get_float4_infinity() : d;
}

/* ---- shared by the hnsw files ---- */

/* a candidate during a search: an element found on disk */
typedef struct HnswCandidate
{
	float dist;
	ItemPointerData tid;     /* its element tuple */
	ItemPointerData heaptid; /* invalid when deleted */
	int level;
	Vector *vec; /* a copy, when the caller asked for vectors */
} HnswCandidate;

/* a binary min-heap of (key, index) pairs; max-heaps store -key */
typedef struct HnswHeapItem
{
	float key;
	int32 idx;
} HnswHeapItem;

typedef struct HnswHeap
{
	HnswHeapItem *items;
	int n;
	int cap;
} HnswHeap;

extern void HnswHeapInit(HnswHeap *h, int cap);
extern void HnswHeapPush(HnswHeap *h, float key, int32 idx);
extern HnswHeapItem HnswHeapPop(HnswHeap *h);

static inline HnswHeapItem *
HnswHeapTop(HnswHeap *h)
{
	return &h->items[0];
}

/* a set of 64-bit keys (element TIDs, or in-memory ids) */
typedef struct HnswTidSet HnswTidSet;
extern HnswTidSet *HnswTidSetCreate(MemoryContext cxt, uint32 size);
extern bool HnswTidSetAdd(HnswTidSet *set, uint64 key); /* true if new */
extern bool HnswTidSetContains(HnswTidSet *set, uint64 key);

/* hnsw.c */
extern int hnsw_ef_search;
extern void HnswInitGucs(void);
extern int HnswGetM(Relation index);
extern int HnswGetEfConstruction(Relation index);

/* hnswutils.c */
extern int HnswRandomLevel(int m, ItemPointer heaptid);
extern int HnswFitLevel(int dims, int m, int level);
extern void HnswCheckDims(Relation index, int dims, int m);
extern Vector *HnswIndexValue(Relation index, Datum value);
extern void HnswReadMeta(Relation index, HnswMetaPageData *meta);
extern void HnswInitPage(Page page);
extern Buffer HnswNewBuffer(Relation index, ForkNumber forknum);
extern bool HnswLoadElement(Relation index, ItemPointer tid, const HnswDistance *hd,
							const Vector *q, HnswCandidate *c, bool copyvec,
							ItemPointerData *nbrs, int *nnbrs, int lc);
extern int HnswSearchLayer(Relation index, const HnswDistance *hd, const Vector *q,
						   HnswCandidate *entries, int nentries, int ef, int lc,
						   bool copyvec, HnswCandidate **result);
extern int HnswSelectNeighbors(const HnswDistance *hd, const Vector *q, HnswCandidate *cands,
							   int ncands, int m, int *chosen);
extern void HnswMetaCover(Page metapage);
extern void HnswInsertOnDisk(Relation index, Vector *vec, ItemPointer heaptid,
							 const HnswDistance *hd, int m, int efc);

/* hnswbuild.c */
extern IndexBuildResult *hnswbuild(Relation heap, Relation index, IndexInfo *indexInfo);
extern void hnswbuildempty(Relation index);

/* hnswinsert.c */
extern HnswElementTuple HnswFormTuple(const Vector *vec, int m, int level, ItemPointer heaptid,
									  Size *size);
extern bool hnswinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
					   Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
					   IndexInfo *indexInfo);

/* hnswscan.c */
extern IndexScanDesc hnswbeginscan(Relation index, int nkeys, int norderbys);
extern void hnswrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys,
					   int norderbys);
extern bool hnswgettuple(IndexScanDesc scan, ScanDirection dir);
extern void hnswendscan(IndexScanDesc scan);

/* hnswvacuum.c */
extern IndexBulkDeleteResult *hnswbulkdelete(IndexVacuumInfo *info,
											 IndexBulkDeleteResult *stats,
											 IndexBulkDeleteCallback callback,
											 void *callback_state);
extern IndexBulkDeleteResult *hnswvacuumcleanup(IndexVacuumInfo *info,
												IndexBulkDeleteResult *stats);

/* hnswreconnect.c */
extern int HnswReconnect(IndexVacuumInfo *info);

#endif /* BV_VECTOR_H */
