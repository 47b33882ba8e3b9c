/*-------------------------------------------------------------------------
 *
 * producer.c
 *	  Kafka producers, one per sink, and their delivery reports.
 *
 * Each sink gets a librdkafka producer with the guarantees bv_cdc's
 * "nothing lost" promise rests on: enable.idempotence=true (no duplicates
 * or reordering from librdkafka's own retries) and acks=all.  A sink's
 * configuration may set any other librdkafka property; it may not weaken
 * those two (cdc_kafka_conf refuses, at add_sink time and again here).
 *
 * Every message carries a 64-bit opaque that names the in-flight
 * transaction it belongs to (stream.c); its delivery report hands it back
 * through cdc_stream_delivered(), which is how the slot learns what Kafka
 * has acknowledged.  A failed delivery marks the sink failed: the stream is
 * restarted from the slot, replaying everything unacknowledged, in order.
 *
 * Concurrency: librdkafka runs its own threads, but every callback here
 * (delivery reports, errors) is served by rd_kafka_poll()/rd_kafka_flush()
 * from the worker's main thread, so callbacks may touch worker state; they
 * never call PostgreSQL functions that could throw or allocate, and they
 * publish to shared memory only through cdc_sinks_publish().
 *
 * Memory: librdkafka copies payloads and keys (RD_KAFKA_MSG_F_COPY) into
 * its own malloc'd buffers, bounded by queue.buffering.max.messages/kbytes
 * and by bv_cdc.max_inflight; sink structs live in the config context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "bv_cdc.h"

/* The sink behind each stats slot; a producer's opaque is its slot + 1. */
static CdcSink *sink_by_slot[BV_CDC_MAX_SINKS];

/*
 * cdc_jsonb_to_properties
 *		A sink's config object as two lists of property names and values
 *		(strings; numbers and booleans as their text).  Throws for anything
 *		that is not a flat object of scalars.
 */
void
cdc_jsonb_to_properties(Jsonb *config, List **keys, List **values)
{
	JsonbIterator *it;
	JsonbValue v;
	JsonbIteratorToken tok;
	char *key = NULL;

	*keys = NIL;
	*values = NIL;
	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("sink configuration must be a JSON object"),
						errhint("Pass librdkafka properties as {\"bootstrap.servers\": \"host:9092\", ...}.")));
	it = JsonbIteratorInit(&config->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			char *value;

			switch (v.type)
			{
				case jbvString:
					value = pnstrdup(v.val.string.val, v.val.string.len);
					break;
				case jbvNumeric:
					value = DatumGetCString(
						DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
					break;
				case jbvBool:
					value = pstrdup(v.val.boolean ? "true" : "false");
					break;
				default:
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("sink property \"%s\" must be a string, number or boolean", key),
							 errhint("librdkafka properties are flat key/value pairs.")));
			}
			*keys = lappend(*keys, key);
			*values = lappend(*values, value);
		}
	}
}

/*
 * cdc_kafka_conf
 *		A librdkafka configuration from the sink's properties, on top of
 *		bv_cdc's defaults; NULL with the reason in errbuf (and the offending
 *		property in *badkey) when librdkafka refuses one, when one would
 *		weaken delivery guarantees, or when bootstrap.servers is missing.
 */
rd_kafka_conf_t *
cdc_kafka_conf(List *keys, List *values, char *errbuf, size_t errlen, char **badkey)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	int n;
	bool have_bootstrap = false;
	static const char *const defaults[][2] = {
		{"client.id", "bv_cdc"},
		{"linger.ms", "5"},
		{"enable.idempotence", "true"},
		{"acks", "all"},
		{"message.timeout.ms", "300000"},
		{"reconnect.backoff.ms", "100"},
		{"reconnect.backoff.max.ms", "10000"},
	};
	int i;

	*badkey = NULL;
	for (i = 0; i < lengthof(defaults); i++)
		if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], errbuf, errlen) !=
			RD_KAFKA_CONF_OK)
		{
			*badkey = pstrdup(defaults[i][0]);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}

	for (n = 0; n < list_length(keys); n++)
	{
		const char *k = list_nth(keys, n);
		const char *v = list_nth(values, n);

		if ((strcmp(k, "enable.idempotence") == 0 && pg_strcasecmp(v, "true") != 0) ||
			(strcmp(k, "acks") == 0 && strcmp(v, "all") != 0 && strcmp(v, "-1") != 0) ||
			strcmp(k, "request.required.acks") == 0 ||
			strcmp(k, "enable.gapless.guarantee") == 0)
		{
			snprintf(errbuf, errlen,
					 "bv_cdc requires enable.idempotence=true and acks=all; \"%s\" = \"%s\" would "
					 "allow lost or reordered changes.",
					 k, v);
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		if (strcmp(k, "bootstrap.servers") == 0 || strcmp(k, "metadata.broker.list") == 0)
			have_bootstrap = v[0] != '\0';
		if (rd_kafka_conf_set(conf, k, v, errbuf, errlen) != RD_KAFKA_CONF_OK)
		{
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
	}
	if (!have_bootstrap)
	{
		snprintf(errbuf, errlen, "The property \"bootstrap.servers\" is required.");
		*badkey = pstrdup("bootstrap.servers");
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

static CdcSink *
sink_of(rd_kafka_t *rk)
{
	intptr_t slot = (intptr_t) rd_kafka_opaque(rk) - 1;

	if (slot < 0 || slot >= BV_CDC_MAX_SINKS)
		return NULL;
	return sink_by_slot[slot];
}

/* Delivery report: served from rd_kafka_poll() in the worker's thread. */
static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	CdcSink *sink = sink_of(rk);
	bool ok = m->err == RD_KAFKA_RESP_ERR_NO_ERROR;
	XLogRecPtr lsn = cdc_stream_delivered((uint64) (uintptr_t) m->_private, ok);

	if (sink == NULL)
		return;
	sink->pending--;
	if (ok)
	{
		sink->n_acked++;
		sink->n_bytes += m->len;
		if (lsn > sink->acked_lsn)
			sink->acked_lsn = lsn;
		sink->down = false;
	}
	else
	{
		sink->n_errors++;
		/* A purge during a restart is not a new error. */
		if (m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE && m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
		{
			sink->failed = true;
			snprintf(sink->last_error, sizeof(sink->last_error), "delivery failed: %s",
					 rd_kafka_err2str(m->err));
			sink->new_error = true;
		}
	}
}

/* Error callback: broker and transport trouble, fatal idempotence errors. */
static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	CdcSink *sink = sink_of(rk);

	if (sink == NULL)
		return;
	sink->n_errors++;
	snprintf(sink->last_error, sizeof(sink->last_error), "%s", reason);
	sink->new_error = true;
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT)
		sink->down = true;
	if (err == RD_KAFKA_RESP_ERR__FATAL)
		sink->failed = true;
}

/*
 * librdkafka's log lines: queued (log.queue=true) and served by
 * rd_kafka_poll() in the worker's thread, so they can go to the server log.
 */
static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	ereport(level <= 4 ? LOG : DEBUG1,
			(errmsg_internal("bv_cdc sink %s: %s: %s", rd_kafka_name(rk), fac, buf)));
}

/*
 * cdc_sink_start
 *		Create the sink's producer.  false with errbuf on failure.
 */
bool
cdc_sink_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	char *badkey;
	rd_kafka_conf_t *conf = cdc_kafka_conf(sink->conf_keys, sink->conf_values, errbuf, errlen,
										   &badkey);

	if (conf == NULL)
		return false;
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_log_cb(conf, on_log);
	if (rd_kafka_conf_set(conf, "log.queue", "true", errbuf, errlen) != RD_KAFKA_CONF_OK)
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}
	rd_kafka_conf_set_opaque(conf, (void *) (intptr_t) (sink->stats_slot + 1));
	sink_by_slot[sink->stats_slot] = sink;
	sink->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
	if (sink->rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		sink_by_slot[sink->stats_slot] = NULL;
		return false;
	}
	rd_kafka_set_log_queue(sink->rk, NULL);
	sink->pending = 0;
	sink->failed = false;
	return true;
}

/*
 * cdc_sink_stop
 *		Destroy the sink's producer without waiting for what is queued: what
 *		was not acknowledged will be replayed from the slot.
 */
void
cdc_sink_stop(CdcSink *sink)
{
	if (sink->rk == NULL)
		return;
	rd_kafka_purge(sink->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_poll(sink->rk, 0);
	rd_kafka_destroy(sink->rk);
	sink->rk = NULL;
	sink->pending = 0;
	if (sink_by_slot[sink->stats_slot] == sink)
		sink_by_slot[sink->stats_slot] = NULL;
}

/*
 * cdc_sink_produce
 *		Queue one message.  Blocks (serving delivery reports, interrupts and
 *		the replication keepalive) while librdkafka's queue is full: that is
 *		how a slow or absent broker stops the worker from reading further.
 */
CdcProduceResult
cdc_sink_produce(CdcSink *sink, const char *topic, const char *key, size_t keylen,
				 const char *payload, size_t len, const CdcHeaders *h, uint64 opaque, char **err)
{
	for (;;)
	{
		rd_kafka_headers_t *hdrs = rd_kafka_headers_new(5);
		char xid[24];
		rd_kafka_resp_err_t rc;

		rd_kafka_header_add(hdrs, "op", -1, h->op, -1);
		rd_kafka_header_add(hdrs, "table", -1, h->table, -1);
		rd_kafka_header_add(hdrs, "lsn", -1, h->lsn, -1);
		snprintf(xid, sizeof(xid), INT64_FORMAT, h->xid);
		rd_kafka_header_add(hdrs, "xid", -1, xid, -1);
		if (h->traceparent)
			rd_kafka_header_add(hdrs, "traceparent", -1, h->traceparent, -1);

		rc = rd_kafka_producev(sink->rk, RD_KAFKA_V_TOPIC(topic),
							   RD_KAFKA_V_KEY((void *) key, keylen),
							   RD_KAFKA_V_VALUE((void *) payload, len),
							   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
							   RD_KAFKA_V_OPAQUE((void *) (uintptr_t) opaque), RD_KAFKA_V_END);
		if (rc == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			sink->pending++;
			return CDC_PRODUCE_OK;
		}
		rd_kafka_headers_destroy(hdrs);
		if (rc != RD_KAFKA_RESP_ERR__QUEUE_FULL)
		{
			*err = psprintf("%s", rd_kafka_err2str(rc));
			if (rc == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || rc == RD_KAFKA_RESP_ERR__INVALID_ARG ||
				rc == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION)
				return CDC_PRODUCE_REJECTED;
			return CDC_PRODUCE_RESTART;
		}
		/* Full: wait for acknowledgements, keep the stream alive. */
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		rd_kafka_poll(sink->rk, 50);
		pgstat_report_wait_end();
		cdc_stream_keepalive();
		CHECK_FOR_INTERRUPTS();
		if (sink->failed)
			return CDC_PRODUCE_RESTART;
	}
}

/* Serve delivery reports of every sink, waiting at most timeout_ms once. */
void
cdc_sinks_poll(CdcConfig *cfg, int timeout_ms)
{
	int i;

	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].rk)
			rd_kafka_poll(cfg->sinks[i].rk, i == 0 ? timeout_ms : 0);
}

/* Copy the sinks' local counters to shared memory. */
void
cdc_sinks_publish(CdcConfig *cfg)
{
	int i;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&cdc_shared->mutex);
	for (i = 0; i < cfg->nsinks; i++)
	{
		CdcSink *s = &cfg->sinks[i];
		CdcSinkStats *st = &cdc_shared->sinks[s->stats_slot];

		if (s->n_acked > 0)
			st->last_ack = now;
		st->events += s->n_acked;
		st->bytes += s->n_bytes;
		st->errors += s->n_errors;
		if (s->acked_lsn > st->acked_lsn)
			st->acked_lsn = s->acked_lsn;
		if (s->new_error)
			strlcpy(st->last_error, s->last_error, sizeof(st->last_error));
		strlcpy(st->state, s->paused ? "paused" : s->down ? "down"
											  : s->rk     ? "up"
														  : "idle",
				sizeof(st->state));
		s->n_acked = s->n_bytes = s->n_errors = 0;
		s->new_error = false;
	}
	SpinLockRelease(&cdc_shared->mutex);
}

int64
cdc_sinks_pending(CdcConfig *cfg)
{
	int64 n = 0;
	int i;

	for (i = 0; i < cfg->nsinks; i++)
		n += cfg->sinks[i].pending;
	return n;
}

bool
cdc_sinks_failed(CdcConfig *cfg)
{
	int i;

	for (i = 0; i < cfg->nsinks; i++)
		if (cfg->sinks[i].failed)
			return true;
	return false;
}

/* The sink struct of a producer moved to a new config. */
void
cdc_sink_rebind(CdcSink *sink)
{
	sink_by_slot[sink->stats_slot] = sink;
}
