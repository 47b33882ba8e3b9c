/*-------------------------------------------------------------------------
 *
 * bv_cdc.h
 *	  Declarations shared by the files of bv_cdc, the change-data-capture
 *	  worker that streams a wal2json slot to Kafka, MQTT and webhooks.
 *
 * Files, by concern:
 *   bv_cdc.c     _PG_init: settings, shared memory, the worker's
 *                registration, the traceparent hook in ordinary backends
 *   worker.c     the worker's main loop: extension check, config reload,
 *                (re)starts with back-off, the wait loop
 *   stream.c     the replication stream: slot, START_REPLICATION, status
 *                updates, the in-flight transaction window and slot advance
 *   wal2json.c   wal2json format-version 2 messages -> W2jMessage
 *   envelope.c   W2jMessage -> the bv_cdc envelope and message key
 *   producer.c   Kafka producers (one per sink), delivery reports
 *   config.c     sinks and routes read from the bv_cdc tables (SPI)
 *   batch.c      the worker's SPI batches and the quarantine (below all)
 *   kinds.c      the registry of sink kinds (names every kind)
 *   sink.c       what every kind shares: dispatch, acknowledgements,
 *                isolation, statistics, property tables
 *   mqtt.c, webhook.c, spool.c: the other sink kinds
 *   snapshot.c   bv_cdc.snapshot(): chunks between watermarks, "r" events
 *   api.c        SQL-callable functions: config validation, stats, trigger
 *
 * Only the worker process uses the worker-side state (config, producers,
 * stream); ordinary backends touch nothing but shared memory (stats, the
 * config generation counter and the worker's latch).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_H
#define BV_CDC_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#define BV_CDC_VERSION   "0.3.0"
#define BV_CDC_MAX_SINKS 16
#define BV_CDC_ERRLEN    256

/* Prefix of the logical decoding message that carries a traceparent. */
#define BV_CDC_TRACE_PREFIX "bv.traceparent"

/*
 * Writer notes (bv_cdc.c, in ordinary backends), transactional decoding
 * messages the worker reads in commit order:
 *   bv.columns     before a transaction's first UPDATE of a table with a
 *                  TOAST table: the table's columns as that transaction sees
 *                  them, so that "unchanged" is derived from the columns the
 *                  change had, not from today's catalog (issue #27).
 *   bv.noidentity  after an UPDATE or DELETE of a table without replica
 *                  identity, whose row changes wal2json cannot decode: the
 *                  worker quarantines the statement's table and row count.
 */
#define BV_CDC_COLUMNS_PREFIX "bv.columns"
#define BV_CDC_NOIDENT_PREFIX "bv.noidentity"

/* Operation bits, for route filters. */
#define CDC_OP_C   0x01
#define CDC_OP_U   0x02
#define CDC_OP_D   0x04
#define CDC_OP_T   0x08
#define CDC_OP_R   0x10
#define CDC_OP_ALL 0x1f

/* ---- shared memory (bv_cdc.c) ---- */

typedef struct CdcSinkStats
{
	bool in_use;
	char name[NAMEDATALEN];
	uint64 events;        /* acknowledged by the broker */
	uint64 bytes;         /* payload bytes acknowledged */
	uint64 errors;        /* delivery and transport errors */
	uint64 retries;       /* stream restarts caused by this sink */
	XLogRecPtr acked_lsn; /* LSN of the last acknowledged event */
	TimestampTz last_ack;
	char state[16]; /* up, down, stalled, failed, paused, idle */
	char kind[16];
	char circuit[16];     /* webhook: closed, open, half-open */
	int64 spooled;        /* webhook: events waiting in the spool now */
	uint64 dead_letters;  /* webhook: events parked since the worker started */
	uint64 spool_retries; /* webhook: redelivery attempts from the spool */
	char last_error[BV_CDC_ERRLEN];
} CdcSinkStats;

typedef struct CdcShared
{
	slock_t mutex;
	pid_t worker_pid;
	Latch *worker_latch;
	pg_atomic_uint64 config_generation;
	pg_atomic_uint64 spool_generation; /* bumped when dead letters are replayed */
	bool logged_no_extension;
	char state[32];
	XLogRecPtr received_lsn;           /* last position read from the stream */
	XLogRecPtr confirmed_lsn;          /* last position confirmed to the slot */
	TimestampTz oldest_pending_commit; /* 0 when nothing is in flight */
	TimestampTz last_heartbeat;
	uint64 inflight; /* messages produced, not yet acknowledged */
	uint64 quarantined;
	uint64 restarts;
	char last_error[BV_CDC_ERRLEN];
	CdcSinkStats sinks[BV_CDC_MAX_SINKS];
} CdcShared;

extern CdcShared *cdc_shared;

/* settings */
extern char *cdc_database;
extern char *cdc_slot_name;
extern char *cdc_conninfo;
extern int cdc_max_inflight;
extern int cdc_status_interval_ms;
extern int cdc_heartbeat_interval_ms;
extern int cdc_naptime_ms;
extern int cdc_retry_max_ms;
extern int cdc_stall_timeout_ms;

extern void cdc_set_state(const char *state);
extern void cdc_set_error(const char *fmt, ...) pg_attribute_printf(1, 2);

/* ---- config (config.c) ---- */

struct CdcSinkOps;

typedef struct CdcSink
{
	char *name;
	char *kind;
	const struct CdcSinkOps *ops;
	char *config_json; /* text of the jsonb, to detect changes */
	List *conf_keys;   /* properties, char * each */
	List *conf_values;
	bool paused;
	int stats_slot; /* index in cdc_shared->sinks */
	void *impl;     /* the kind's state (producer.c's KafkaSink, ...); NULL = not started */
	int64 pending;  /* handed to the sink, not yet acknowledged */
	bool failed;    /* a delivery failed: the stream must restart */
	/* counters not yet published to shared memory */
	uint64 n_acked, n_bytes, n_errors;
	XLogRecPtr acked_lsn;
	bool down;
	char last_error[BV_CDC_ERRLEN];
	bool new_error;
	/*
	 * Isolation (ADR 0032): a sink that cannot start is "failed", retried
	 * on its own back-off; the others stream on.  A stall is in-flight
	 * messages and no acknowledgement for bv_cdc.stall_timeout.
	 */
	bool start_failed;
	TimestampTz retry_at;
	int retry_attempt;
	TimestampTz stall_since; /* 0: acknowledged since the last publish */
	bool stalled;
	/* transaction-boundary events (Kafka property bv.transaction_topic) */
	char *txn_topic;  /* NULL: none */
	int64 txn_events; /* events of the open transaction sent to this sink */
	List *txn_tables; /* CdcTxnTable, in the stream's transaction context */
} CdcSink;

typedef struct CdcTxnTable
{
	char *table;
	int64 events;
} CdcTxnTable;

typedef struct CdcRoute
{
	int64 id;
	char *pattern; /* schema.table glob, '*' and '?' */
	int sink;      /* index into CdcConfig.sinks */
	char *topic_template;
	List *include_columns; /* of char *, NIL = all */
	List *exclude_columns;
	int ops;
	int qos;           /* mqtt: 0, 1 or 2 */
	bool retain;       /* mqtt: retained messages */
	bool hold_key;     /* webhook: on_dead_letter = hold */
	bool return_retry; /* amqp: on_return = retry (else dead_letter) */
	bool key_topic;    /* the topic template has {key} */
	char *owner;       /* role that added it (may SELECT the tables); NULL: before 0.3.0 */
} CdcRoute;

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

typedef struct CdcConfig
{
	MemoryContext cxt;
	uint64 generation;
	int nsinks;
	CdcSink *sinks;
	int nroutes;
	CdcRoute *routes;
	HTAB *tables; /* CdcTableRoutes by "schema.table" */
} CdcConfig;

extern bool cdc_extension_exists(void);
extern CdcConfig *cdc_config_load(MemoryContext parent);
extern void cdc_config_free(CdcConfig *cfg);
extern CdcTableRoutes *cdc_config_table(CdcConfig *cfg, const char *schema, const char *table);
extern bool cdc_internal_schema(const char *schema);

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

/* ---- sinks (sink.c, producer.c, mqtt.c, webhook.c) ---- */

typedef struct CdcHeaders
{
	const char *op;
	const char *table;
	const char *lsn;
	int64 xid;
	const char *traceparent;
} CdcHeaders;

/* One event handed to a sink. */
typedef struct CdcEvent
{
	const char *topic; /* expanded: Kafka/MQTT topic, webhook BV-Topic */
	const char *key;   /* primary key as a JSON object; NULL for truncate */
	size_t keylen;
	const char *payload; /* the envelope */
	size_t len;
	const CdcHeaders *h;
	const CdcRoute *route;
	const char *event_id; /* stable across retries and replays */
	uint64 opaque;        /* window entry, for cdc_sink_acked() */
} CdcEvent;

typedef enum CdcProduceResult
{
	CDC_PRODUCE_OK,
	CDC_PRODUCE_REJECTED, /* this message can never be sent: quarantine it */
	CDC_PRODUCE_RESTART   /* the sink failed: restart the stream */
} CdcProduceResult;

/*
 * A sink kind's properties, declared once (issue #27): validation checks
 * each configured property's JSON type and range against its row.
 * STRING: min/max are lengths in bytes; INT: the range; BOOL: none; FILE: a
 * path of at most max bytes that must be readable when the sink is added
 * and when it starts.  secret: the value names a secret of bv.secrets.
 */
typedef enum CdcPropType
{
	CDC_PROP_STRING,
	CDC_PROP_INT,
	CDC_PROP_BOOL,
	CDC_PROP_FILE
} CdcPropType;

typedef struct CdcProperty
{
	const char *name;
	CdcPropType type;
	const char *dflt; /* NULL: none (required ones are checked by validate) */
	int64 min;
	int64 max;
	bool secret;
} CdcProperty;

/* Limits of any sink configuration (absurd sizes are refused). */
#define CDC_MAX_PROPERTIES   100
#define CDC_MAX_PROPERTY_KEY 128
#define CDC_MAX_STRING_VALUE 4096
#define CDC_MAX_CONFIG_BYTES 65536

/*
 * What a sink kind implements.  validate throws (22023, with the reason) for
 * a configuration that could never work; it runs in ordinary backends at
 * add_sink/alter_sink time and again in the worker.  The others run only in
 * the worker.  produce takes ownership of nothing (copy what you keep) and
 * may block while the sink is full, calling cdc_stream_keepalive().  poll
 * serves acknowledgements, waiting at most timeout_ms; wait_ms says how soon
 * the sink wants to be polled again (-1: no hurry).
 */
typedef enum CdcTopicStyle
{
	CDC_TOPIC_NAME,  /* a Kafka topic: other characters become _, 249 bytes */
	CDC_TOPIC_LEVELS /* levels as written; topic_reserved in names become _ */
} CdcTopicStyle;

typedef struct CdcSinkOps
{
	const char *kind;
	const CdcProperty *properties; /* ends with a NULL name */
	bool open_properties;          /* others pass through (librdkafka's) */
	CdcTopicStyle topic_style;     /* how config.c expands a topic template */
	const char *topic_reserved;    /* CDC_TOPIC_LEVELS: characters of names that become _ */
	bool event_ids;                /* wants CdcEvent.event_id (stable across replays) */
	/* adds the kind's own statistics (under cdc_shared->mutex; may be NULL) */
	void (*publish_stats)(CdcSink *sink, CdcSinkStats *st);
	void (*validate)(List *keys, List *values);
	bool (*start)(CdcSink *sink, char *errbuf, size_t errlen);
	void (*stop)(CdcSink *sink);
	CdcProduceResult (*produce)(CdcSink *sink, const CdcEvent *ev, char **err);
	void (*poll)(CdcSink *sink, int timeout_ms);
	int (*wait_ms)(CdcSink *sink);
	void (*rebind)(CdcSink *sink);
} CdcSinkOps;

/* kinds.c: the registry of sink kinds, the only file that names them all */
extern const CdcSinkOps cdc_kafka_ops;
extern const CdcSinkOps cdc_mqtt_ops;
extern const CdcSinkOps cdc_webhook_ops;
extern const CdcSinkOps cdc_amqp_ops;
extern const CdcSinkOps cdc_nats_ops;

extern const CdcSinkOps *cdc_sink_ops(const char *kind);
extern int cdc_sink_kind_count(void);
extern const CdcSinkOps *cdc_sink_kind(int i);
extern char *cdc_sink_kind_names(void);
extern void cdc_jsonb_to_properties(Jsonb *config, List **keys, List **values);
extern const char *cdc_property(List *keys, List *values, const char *name, const char *dflt);
extern int cdc_property_int(List *keys, List *values, const char *name, int dflt, int min,
							int max);
extern void cdc_check_properties(const char *kind, List *keys, const CdcProperty *known);
extern const char *cdc_prop(const CdcProperty *props, List *keys, List *values, const char *name);
extern int cdc_prop_int(const CdcProperty *props, List *keys, List *values, const char *name);
extern void cdc_check_property_types(const CdcSinkOps *ops, Jsonb *config);
extern char *cdc_secret_get(const char *name);

/* Accounting every kind shares: called once per event handed to produce. */
extern void cdc_sink_acked(CdcSink *sink, uint64 opaque, size_t bytes);
extern void cdc_sink_spooled(CdcSink *sink, uint64 opaque);
extern void cdc_sink_delivery_failed(CdcSink *sink, uint64 opaque, const char *fmt, ...)
	pg_attribute_printf(3, 4);
extern void cdc_sink_note_error(CdcSink *sink, bool down, const char *fmt, ...)
	pg_attribute_printf(3, 4);

extern bool cdc_sink_start_isolated(CdcSink *sink);
extern bool cdc_sinks_retry_failed(CdcConfig *cfg);
extern void cdc_sink_stop(CdcSink *sink);
extern void cdc_sink_rebind(CdcSink *sink);
extern CdcProduceResult cdc_sink_produce(CdcSink *sink, const CdcEvent *ev, char **err);
extern void cdc_sinks_poll(CdcConfig *cfg, int timeout_ms);
extern int cdc_sinks_wait_ms(CdcConfig *cfg);
extern void cdc_sinks_publish(CdcConfig *cfg);
extern int64 cdc_sinks_pending(CdcConfig *cfg);
extern bool cdc_sinks_failed(CdcConfig *cfg);

/* stream.c: called by the sinks for each acknowledgement and while blocked. */
extern XLogRecPtr cdc_stream_delivered(uint64 opaque, bool ok);
extern void cdc_stream_keepalive(void);

/* ---- stream (stream.c) ---- */

extern void cdc_stream_run(CdcConfig **cfgp);
extern void cdc_stream_set_config(CdcConfig *cfg);
extern bool cdc_stream_held(void);
extern void cdc_stream_cleanup(void);

/* ---- snapshot (snapshot.c) ---- */

#define BV_CDC_WATERMARK_PREFIX "bv.watermark"

/* batch.c: the worker's SPI batches (pg_cron's shape), the quarantine */
extern void cdc_begin_batch(const char *activity);
extern void cdc_end_batch(void);
extern char *cdc_batch_failed(MemoryContext outer);
extern List *cdc_text_array_to_list(Datum d, bool isnull, bool keep_nulls);
extern void cdc_quarantine(XLogRecPtr lsn, const char *reason, const char *payload, int len);

extern void cdc_snapshot_reset(void);
extern void cdc_snapshot_step(XLogRecPtr flushed);
extern bool cdc_snapshot_watermark(const char *content, XLogRecPtr lsn);
extern void cdc_snapshot_on_change(const W2jMessage *m);
extern int cdc_snapshot_rows(W2jColumn ***rows, bool **dropped, int *ncols, W2jMessage *m);

/* ---- worker (worker.c) ---- */

PGDLLEXPORT extern void bv_cdc_worker_main(Datum arg);
extern bool cdc_worker_maintain(CdcConfig **cfgp, bool *restart);

#endif /* BV_CDC_H */
