/*-------------------------------------------------------------------------
 *
 * cdc.h
 *	  The decoding and streaming layers of bv_cdc's worker: wal2json
 *	  messages (wal2json.c), envelopes (envelope.c), the routes of a table
 *	  (config.c), the replication stream's steps (stream.c), snapshots
 *	  (snapshot.c) and the worker's loop (worker.c), which calls the steps.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_CDC_H
#define BV_CDC_CDC_H

#include "common/jsonapi.h"
#include "lib/stringinfo.h"

#include "batch.h"
#include "sink.h"
#include "window.h"

/* ---- wal2json messages (wal2json.c) and envelopes (envelope.c) ---- */

typedef struct W2jColumn
{
	char *name;
	char *type;
	char *value;
	JsonTokenType vtype;
} W2jColumn;

typedef struct W2jMessage
{
	char action; /* B C I U D T M */
	int64 xid;
	char *lsn;
	char *nextlsn;
	char *timestamp;
	char *schema;
	char *table;
	char *prefix;
	char *content;
	bool transactional;
	int ncolumns;
	W2jColumn *columns;
	int nidentity;
	W2jColumn *identity;
	int npk;
	W2jColumn *pk;
} W2jMessage;

typedef struct CdcEventSource
{
	const char *database;
	const char *lsn;
	int64 xid;
	int64 ts_us; /* commit time, microseconds since the Unix epoch */
	const char *ts;
	int64 seq; /* position of the change in its transaction, from 1 */
} CdcEventSource;

extern bool w2j_parse(const char *json, int len, W2jMessage *msg, char **err);
extern bool cdc_parse_timestamp(const char *ts, int64 *unix_us);
/* The columns a change's table had when it was written (a bv.columns note). */
typedef struct CdcColumnNames
{
	int n;
	char **names;
} CdcColumnNames;

extern void cdc_build_envelope(StringInfo out, char op, const CdcEventSource *src,
							   const W2jMessage *msg, const W2jColumn *before, int nbefore,
							   const W2jColumn *after, int nafter, const CdcRoute *route,
							   const CdcColumnNames *cols, const char *key, int keylen);
extern bool cdc_build_key(StringInfo out, const W2jMessage *msg, const W2jColumn *cols, int ncols);

/* ---- config (config.c) ---- */

/* The routes that apply to one table, cached by "schema.table". */
typedef struct CdcTableRoutes
{
	char key[2 * NAMEDATALEN + 2];
	int nroutes;
	int *routes;   /* indexes into CdcConfig.routes */
	char **topics; /* topic of each, template expanded */
	int natts;     /* -1 until looked up: live columns of the table */
	char **attnames;
} CdcTableRoutes;

extern bool cdc_extension_exists(void);
extern CdcConfig *cdc_config_load(MemoryContext parent);
extern void cdc_config_free(CdcConfig *cfg);
extern CdcTableRoutes *cdc_config_table(CdcConfig *cfg, const char *schema, const char *table);

/* ---- stream (stream.c): steps the worker's loop calls ---- */

typedef enum CdcStepResult
{
	CDC_STEP_IDLE,   /* read what there was: the loop may wait */
	CDC_STEP_BUSY,   /* more to read now: do not wait */
	CDC_STEP_RESTART /* the stream must start over from the slot */
} CdcStepResult;

extern bool cdc_stream_start(CdcConfig *cfg);
extern CdcStepResult cdc_stream_read(CdcConfig *cfg);
extern bool cdc_stream_acks(CdcConfig *cfg);
extern bool cdc_stream_wait(CdcConfig *cfg, CdcStepResult read);
extern void cdc_stream_keepalive(void);
extern void cdc_stream_set_config(CdcConfig *cfg);
extern void cdc_stream_cleanup(void);

/* ---- snapshot (snapshot.c) ---- */

extern void cdc_snapshot_reset(void);
extern void cdc_snapshot_step(XLogRecPtr flushed);
extern bool cdc_snapshot_watermark(const char *content, XLogRecPtr lsn);
extern void cdc_snapshot_on_change(const W2jMessage *m);
extern int cdc_snapshot_rows(W2jColumn ***rows, bool **dropped, int *ncols, W2jMessage *m);

/* ---- worker (worker.c): the one loop ---- */

PGDLLEXPORT extern void bv_cdc_worker_main(Datum arg);

#endif /* BV_CDC_CDC_H */
