/*-------------------------------------------------------------------------
 *
 * bv_cdc.h
 *	  The base of bv_cdc, the change-data-capture worker that streams a
 *	  wal2json slot to Kafka, MQTT, webhooks, AMQP and NATS: settings,
 *	  shared memory and the state the worker publishes (bv_cdc.c).  Every
 *	  file includes it; it includes no other header of bv_cdc.
 *
 * Layers, from the bottom; a file calls only into its own layer or lower,
 * and each layer has one header (ADR 0033):
 *   bv_cdc.h   bv_cdc.c: _PG_init, settings, shared memory, the writer notes
 *              of ordinary backends
 *   batch.h    batch.c: the worker's SPI batches and the quarantine
 *   window.h   window.c: the in-flight window of transactions, what the
 *              slot may confirm
 *   sink.h     sink.c: a sink, its events, CdcSinkOps and property tables,
 *              the API the kinds call back (acknowledgements, errors,
 *              keepalive hook); names no kind
 *   kinds.h    the kinds (producer.c = Kafka, mqtt.c, webhook.c + spool.c
 *              with webhook.h, amqp.c, nats.c) and their registry, kinds.c
 *   cdc.h      decoding and streaming: wal2json.c, envelope.c, config.c,
 *              snapshot.c, stream.c (the stream's steps), worker.c (the one
 *              loop, which calls the steps); api.c (SQL-callable) on top
 *
 * Only the worker process uses the worker-side state (config, sinks,
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

/* Set by the SQL functions (api.c); the commit wakes the worker (bv_cdc.c). */
extern bool cdc_config_dirty;
extern bool cdc_spool_dirty;

extern void cdc_set_state(const char *state);
extern void cdc_set_error(const char *fmt, ...) pg_attribute_printf(1, 2);

/*
 * Webhook destinations (destination.c): the SSRF policy, setting
 * bv_cdc.webhook_allowed_networks.
 */
struct sockaddr;
extern char *cdc_webhook_allowed_networks;
extern void cdc_define_destination_settings(void);
extern bool cdc_destination_allowed(const struct sockaddr *sa, char *why, size_t whylen);
extern bool cdc_destination_text_allowed(const char *ip, char *why, size_t whylen);
extern void cdc_check_webhook_url(const char *url);

/* Schemas never published, whatever the routes say (bv_cdc.c). */
extern bool cdc_internal_schema(const char *schema);

/* Prefix of the non-transactional message that marks a snapshot chunk. */
#define BV_CDC_WATERMARK_PREFIX "bv.watermark"

#endif /* BV_CDC_H */
