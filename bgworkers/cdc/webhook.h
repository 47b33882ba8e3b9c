/*-------------------------------------------------------------------------
 *
 * webhook.h
 *	  What webhook.c (HTTP delivery) and spool.c (the durable spool and the
 *	  dead letters) share.  Private to bv_cdc's webhook sink kind.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_WEBHOOK_H
#define BV_CDC_WEBHOOK_H

#include "lib/ilist.h"

#include "batch.h"
#include "kinds.h"

/* Why an event left the delivery path for the dead letter table. */
#define WH_DEAD_PERMANENT "permanent"
#define WH_DEAD_EXHAUSTED "exhausted"
#define WH_DEAD_HELD      "held"

/*
 * One event on its way: from the stream (opaque != 0, spool_id = 0) or
 * from the spool (spool_id > 0).  One malloc'd block with its strings.
 */
typedef struct WhItem
{
	dlist_node node;
	uint64 opaque;             /* window entry of a streamed event, else 0 */
	int64 spool_id;            /* row in bv_cdc.webhook_spool, else 0 */
	int attempts;              /* attempts made before this one */
	TimestampTz first_attempt; /* 0: never attempted */
	TimestampTz queued_at;
	int64 route_id;
	bool hold;      /* the route's on_dead_letter = hold */
	uint64 keyhash; /* of keystr: per-key order and holds */
	char *keystr;   /* "schema.table" + the key JSON */
	char *event_id;
	char *topic;
	char *op;
	char *table;
	char *lsn;
	char *traceparent; /* NULL when none */
	char *body;
	size_t len;
	/* outcome of the last attempt, for the spool */
	int status;      /* HTTP status, 0 = none */
	char error[160]; /* curl's or the receiver's reason */
	TimestampTz next_attempt;
	const char *dead_reason; /* set when parked */
	bool move_key_rows;      /* parked with hold: the key's spool rows follow */
} WhItem;

/* Per key (by hash; a collision only orders two keys together). */
typedef struct WhKey
{
	uint64 hash;
	int live;                 /* queued or in flight on the live path */
	int busy;                 /* requests in flight */
	int spooled;              /* rows in the spool (or on their way there) */
	bool held;                /* a parked event holds the key (on_dead_letter = hold) */
	TimestampTz next_attempt; /* latest next attempt of its spooled rows */
} WhKey;

/*
 * The item of a list node (dlist_container's offsetof arithmetic, which
 * cppcheck mistakes for a NULL dereference).
 */
static inline WhItem *
wh_item_of(dlist_node *node)
{
	/* cppcheck-suppress nullPointer */
	return dlist_container(WhItem, node, node);
}

/* spool.c */
extern WhItem *wh_item_new(const CdcEvent *ev, const char *keystr);

typedef struct WhSpoolOps
{
	dlist_head to_spool;  /* new rows: from the stream, or failed first attempts */
	dlist_head to_update; /* spool rows after a failed retry */
	dlist_head to_delete; /* spool rows delivered */
	dlist_head to_dead;   /* to the dead letter table (from stream or spool) */
	int n;
} WhSpoolOps;

extern bool wh_spool_flush(const char *sink, WhSpoolOps *ops, char *errbuf, size_t errlen);
extern int wh_spool_fetch(const char *sink, int limit, dlist_head *out, TimestampTz *next_due);
extern bool wh_spool_load_keys(const char *sink, HTAB *keys, int64 *spooled);

#endif /* BV_CDC_WEBHOOK_H */
