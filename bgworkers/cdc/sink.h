/*-------------------------------------------------------------------------
 *
 * sink.h
 *	  The sink layer: a sink and its configuration, the events handed to it,
 *	  the operations a sink kind implements (CdcSinkOps) with its property
 *	  table, and the API kinds call back (sink.c): acknowledgements, errors,
 *	  properties, the keepalive hook.  Below the kinds, above the window
 *	  (window.h) and the batches (batch.h); it names no kind (ADR 0033).
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_SINK_H
#define BV_CDC_SINK_H

#include "utils/hsearch.h"
#include "utils/jsonb.h"

#include "bv_cdc.h"

struct CdcSinkOps;

/* A sink, as loaded by config.c, with what the worker keeps about it. */

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

/* Sink properties (sink.c) */
extern void cdc_jsonb_to_properties(Jsonb *config, List **keys, List **values);
extern const char *cdc_property(List *keys, List *values, const char *name, const char *dflt);
extern void cdc_check_property_values(const char *kind, const CdcProperty *props, List *keys,
									  List *values);
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

/*
 * A kind blocked in produce() (its window full) calls cdc_sink_keepalive()
 * while it waits: the stream, which registered the hook, keeps its
 * replication connection alive and the statistics current.  A hook rather
 * than a call, so that the kinds never call up into the stream.
 */
extern void cdc_sink_set_keepalive(void (*hook)(void));
extern void cdc_sink_keepalive(void);

#endif /* BV_CDC_SINK_H */
