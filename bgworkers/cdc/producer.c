/*-------------------------------------------------------------------------
 *
 * producer.c
 *	  Kafka sinks: a librdkafka producer per sink, and its delivery reports.
 *
 * Each sink gets a librdkafka producer with the guarantees bv_cdc's
 * "nothing lost" promise rests on: enable.idempotence=true (no duplicates
 * or reordering from librdkafka's own retries) and acks=all.  A sink's
 * configuration may set any other librdkafka property; it may not weaken
 * those two (cdc_kafka_conf refuses, at add_sink time and again here).
 *
 * Every message carries a 64-bit opaque that names the in-flight
 * transaction it belongs to (stream.c); its delivery report hands it back
 * through cdc_sink_acked() (sink.c), which is how the slot learns what
 * Kafka has acknowledged.  A failed delivery marks the sink failed: the stream is
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
 * and by bv_cdc.max_inflight; sink structs live in the config context.  A
 * sink's producer state (KafkaSink: the producer and its topic handles) is
 * in TopMemoryContext, because it moves from config to config
 * (cdc_sink_rebind), and is freed by kafka_stop.
 *
 * Producing a message by topic name costs librdkafka a lookup under its
 * write lock; each sink keeps a handle per topic instead (up to
 * KAFKA_MAX_TOPICS; further topics are produced to by name).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "kinds.h"
#include "window.h"

/* The sink behind each stats slot; a producer's opaque is its slot + 1. */
static CdcSink *sink_by_slot[BV_CDC_MAX_SINKS];

#define KAFKA_MAX_TOPICS 64

/* A Kafka sink's state (CdcSink.impl). */
typedef struct KafkaSink
{
	rd_kafka_t *rk;
	int ntopics;
	int last; /* index of the last topic used */
	char *topic_names[KAFKA_MAX_TOPICS];
	rd_kafka_topic_t *topics[KAFKA_MAX_TOPICS];
} KafkaSink;

#define sink_rk(sink) (((KafkaSink *) (sink)->impl)->rk)

/*
 * librdkafka properties that hold a secret.  A sink never stores them in
 * clear (bv_cdc.sinks is readable by bv_admin and goes into backups): it
 * names a bv.secrets entry in "<property>_secret", which the worker reads
 * when it starts the producer.
 */
static const char *const kafka_secret_properties[] = {
	"sasl.password", "ssl.key.password", "ssl.keystore.password",
	"sasl.oauthbearer.client.secret", NULL};

/*
 * librdkafka properties that run programs or load code (a Kafka sink's
 * properties are set by bv_admin, who is not a superuser: with these it
 * would run commands as the server's OS user).  Refused when a sink is set
 * and again when the worker builds the producer.
 */
static const char *const kafka_code_properties[] = {
	"sasl.kerberos.kinit.cmd", "ssl.engine.location", "ssl.engine.id", "ssl.providers",
	"plugin.library.paths", NULL};

/*
 * librdkafka properties that name files the worker reads as the server's
 * OS user.  Only a superuser may set them (the worker uses what was set).
 */
static const char *const kafka_file_properties[] = {
	"ssl.ca.location", "ssl.crl.location", "ssl.certificate.location", "ssl.key.location",
	"ssl.keystore.location", "sasl.kerberos.keytab", NULL};

/*
 * librdkafka properties that make the worker send requests to a URL of the
 * setter's choice from inside the server's network (OIDC token endpoint:
 * an SSRF, as a webhook to a private address would be).  Only a superuser
 * may set them.
 */
static const char *const kafka_url_properties[] = {"sasl.oauthbearer.token.endpoint.url", NULL};

/*
 * librdkafka properties substituted into the shell command it runs for
 * GSSAPI (the default sasl.kerberos.kinit.cmd is
 * kinit -R -t "%{sasl.kerberos.keytab}" -k %{sasl.kerberos.principal} ...,
 * run with system()): the principal unquoted, the keytab in double quotes.
 * Their values are limited to characters without meaning to the shell.
 */
static const char *const kafka_shell_properties[] = {"sasl.kerberos.principal",
													 "sasl.kerberos.keytab", NULL};
#define KAFKA_SHELL_SAFE \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/@+=:,-"

static bool
kafka_listed(const char *const *list, const char *k)
{
	for (int i = 0; list[i] != NULL; i++)
		if (pg_strcasecmp(k, list[i]) == 0)
			return true;
	return false;
}

/*
 * The secret property that "k" names ("sasl.password" for
 * "sasl.password_secret"), or NULL.  *clear is set when k is the secret
 * property itself.
 */
static const char *
kafka_secret_property(const char *k, bool *clear)
{
	size_t len = strlen(k);
	int i;

	*clear = false;
	for (i = 0; kafka_secret_properties[i] != NULL; i++)
	{
		const char *p = kafka_secret_properties[i];
		size_t plen = strlen(p);

		if (strcmp(k, p) == 0)
		{
			*clear = true;
			return p;
		}
		if (len == plen + 7 && strncmp(k, p, plen) == 0 && strcmp(k + plen, "_secret") == 0)
			return p;
	}
	return NULL;
}

/*
 * cdc_kafka_conf
 *		A librdkafka configuration from the sink's properties, on top of
 *		bv_cdc's defaults; NULL with the reason in errbuf (and the offending
 *		property in *badkey) when librdkafka refuses one, when one would
 *		weaken delivery guarantees, when a secret is given in clear, or when
 *		bootstrap.servers is missing.  With resolve_secrets (the worker),
 *		"<property>_secret" names are read from bv.secrets; without (checks
 *		when a sink is set), they are only checked to be there.
 */
static rd_kafka_conf_t *
cdc_kafka_conf(List *keys, List *values, bool resolve_secrets, char *errbuf, size_t errlen,
			   char **badkey)
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

		if (kafka_listed(kafka_code_properties, k))
		{
			snprintf(errbuf, errlen,
					 "\"%s\" runs a program or loads code as the server's OS user; bv_cdc "
					 "never passes it to librdkafka.",
					 k);
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		if (kafka_listed(kafka_shell_properties, k) &&
			(v[0] == '\0' || v[0] == '-' || strspn(v, KAFKA_SHELL_SAFE) != strlen(v)))
		{
			snprintf(errbuf, errlen,
					 "\"%s\" is put into the shell command librdkafka runs for Kerberos; it may "
					 "hold only letters, digits and . _ / @ + = : , - (not first).",
					 k);
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		if (!resolve_secrets && kafka_listed(kafka_url_properties, k) &&
			!superuser_arg(GetOuterUserId()))
		{
			snprintf(errbuf, errlen,
					 "\"%s\" makes the worker send requests to a URL from inside the server's "
					 "network; only a superuser may set it.",
					 k);
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
		/* checked when the sink is set, by whoever sets it */
		if (!resolve_secrets && kafka_listed(kafka_file_properties, k) &&
			!superuser_arg(GetOuterUserId()))
		{
			snprintf(errbuf, errlen,
					 "\"%s\" names a file the worker reads as the server's OS user; only a "
					 "superuser may set it.",
					 k);
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}

		/* bv_cdc's own properties are not librdkafka's. */
		if (strncmp(k, "bv.", 3) == 0)
		{
			if (strcmp(k, "bv.transaction_topic") == 0 && v[0] != '\0' && strlen(v) <= 249 &&
				strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
					strlen(v))
				continue;
			snprintf(errbuf, errlen,
					 strcmp(k, "bv.transaction_topic") == 0
						 ? "\"%s\" must be a Kafka topic name (letters, digits, \".\", \"_\", \"-\")."
						 : "\"%s\" is not a bv_cdc property; the only one is "
						   "bv.transaction_topic.",
					 k);
			*badkey = pstrdup(k);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}

		{
			bool clear;
			const char *secret_prop = kafka_secret_property(k, &clear);

			if (secret_prop != NULL && clear)
			{
				snprintf(errbuf, errlen,
						 "\"%s\" holds a secret and is never stored in clear: store it with "
						 "bv.secret_set() and name that secret in \"%s_secret\".",
						 k, k);
				*badkey = pstrdup(k);
				rd_kafka_conf_destroy(conf);
				return NULL;
			}
			if (secret_prop != NULL)
			{
				char *secret;

				if (!resolve_secrets)
					continue;
				secret = cdc_secret_get(v);
				if (secret == NULL)
				{
					snprintf(errbuf, errlen, "could not read secret \"%.64s\" named by \"%s\" from bv.secrets",
							 v, k);
					*badkey = pstrdup(k);
					rd_kafka_conf_destroy(conf);
					return NULL;
				}
				if (rd_kafka_conf_set(conf, secret_prop, secret, errbuf, errlen) != RD_KAFKA_CONF_OK)
				{
					explicit_bzero(secret, strlen(secret));
					pfree(secret);
					*badkey = pstrdup(k);
					rd_kafka_conf_destroy(conf);
					return NULL;
				}
				explicit_bzero(secret, strlen(secret));
				pfree(secret);
				continue;
			}
		}
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
	uint64 op = (uint64) (uintptr_t) m->_private;

	if (sink == NULL)
	{
		(void) cdc_window_delivered(op, false);
		return;
	}
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		cdc_sink_acked(sink, op, m->len);
	else if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
	{
		/* A purge during a restart is not a new error. */
		(void) cdc_window_delivered(op, false);
		sink->pending--;
	}
	else
		cdc_sink_delivery_failed(sink, op, "delivery failed: %s", rd_kafka_err2str(m->err));
}

/* Error callback: broker and transport trouble, fatal idempotence errors. */
static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	CdcSink *sink = sink_of(rk);

	if (sink == NULL)
		return;
	cdc_sink_note_error(sink,
						err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
							err == RD_KAFKA_RESP_ERR__TRANSPORT,
						"%s", reason);
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
 * The Kafka properties bv_cdc declares (type and range checked when set);
 * any other librdkafka property passes through to rd_kafka_conf_set as a
 * bounded scalar.
 */
static const CdcProperty kafka_properties[] = {
	{"bootstrap.servers", CDC_PROP_STRING, NULL, 1, 4096, false},
	{"bv.transaction_topic", CDC_PROP_STRING, NULL, 1, 249, false},
	{"client.id", CDC_PROP_STRING, "bv_cdc", 1, 255, false},
	{"compression.type", CDC_PROP_STRING, "none", 1, 16, false},
	{"security.protocol", CDC_PROP_STRING, "plaintext", 1, 32, false},
	{"linger.ms", CDC_PROP_INT, "5", 0, 900000, false},
	{"batch.size", CDC_PROP_INT, "1000000", 1, 2147483647, false},
	{"message.max.bytes", CDC_PROP_INT, "1000000", 1000, 1000000000, false},
	{"message.timeout.ms", CDC_PROP_INT, "300000", 0, 2147483647, false},
	{"enable.idempotence", CDC_PROP_BOOL, "true", 0, 0, false},
	{NULL}};

/* Kafka sinks: every property is librdkafka's (cdc_kafka_conf decides). */
static void
kafka_validate(List *keys, List *values)
{
	char errbuf[512];
	char *badkey;
	rd_kafka_conf_t *conf = cdc_kafka_conf(keys, values, false, errbuf, sizeof(errbuf), &badkey);
	int len;

	if (conf != NULL)
	{
		rd_kafka_conf_destroy(conf);
		return;
	}
	/* librdkafka's messages may end with a newline and lack a period. */
	len = strlen(errbuf);
	while (len > 0 && (errbuf[len - 1] == '\n' || errbuf[len - 1] == ' '))
		errbuf[--len] = '\0';
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid Kafka sink property \"%s\"", badkey ? badkey : "?"),
					errdetail("%s%s", errbuf, len > 0 && errbuf[len - 1] == '.' ? "" : "."),
					errhint("See librdkafka's CONFIGURATION.md for the valid properties; "
							"bootstrap.servers is required, enable.idempotence and acks "
							"are fixed.")));
}

/* Create the sink's producer.  false with errbuf on failure. */
static bool
kafka_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	rd_kafka_t *rk;

	char *badkey;
	rd_kafka_conf_t *conf = cdc_kafka_conf(sink->conf_keys, sink->conf_values, true, errbuf,
										   errlen, &badkey);

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
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		sink_by_slot[sink->stats_slot] = NULL;
		return false;
	}
	rd_kafka_set_log_queue(rk, NULL);
	sink->impl = MemoryContextAllocZero(TopMemoryContext, sizeof(KafkaSink));
	((KafkaSink *) sink->impl)->rk = rk;
	return true;
}

/*
 * kafka_stop
 *		Destroy the sink's producer without waiting for what is queued: what
 *		was not acknowledged will be replayed from the slot.
 */
static void
kafka_stop(CdcSink *sink)
{
	KafkaSink *ks = sink->impl;
	rd_kafka_t *rk = ks->rk;
	int i;

	rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_poll(rk, 0);
	for (i = 0; i < ks->ntopics; i++)
	{
		rd_kafka_topic_destroy(ks->topics[i]);
		pfree(ks->topic_names[i]);
	}
	rd_kafka_destroy(rk);
	pfree(ks);
	sink->impl = NULL;
	sink->pending = 0;
	if (sink_by_slot[sink->stats_slot] == sink)
		sink_by_slot[sink->stats_slot] = NULL;
}

/*
 * The producer's handle of a topic, kept for the producer's lifetime;
 * NULL when there is no room to keep one (then producev looks the topic up
 * by name) or librdkafka refuses the name (then producev reports why).
 */
static rd_kafka_topic_t *
kafka_topic(KafkaSink *ks, const char *name)
{
	rd_kafka_topic_t *rkt;
	int i;

	if (ks->ntopics > 0 && strcmp(ks->topic_names[ks->last], name) == 0)
		return ks->topics[ks->last];
	for (i = 0; i < ks->ntopics; i++)
		if (strcmp(ks->topic_names[i], name) == 0)
		{
			ks->last = i;
			return ks->topics[i];
		}
	if (ks->ntopics >= KAFKA_MAX_TOPICS || (rkt = rd_kafka_topic_new(ks->rk, name, NULL)) == NULL)
		return NULL;
	ks->topic_names[ks->ntopics] = MemoryContextStrdup(TopMemoryContext, name);
	ks->topics[ks->ntopics] = rkt;
	ks->last = ks->ntopics++;
	return rkt;
}

/*
 * kafka_produce
 *		Queue one message.  Blocks (serving delivery reports, interrupts and
 *		the replication keepalive) while librdkafka's queue is full: that is
 *		how a slow or absent broker stops the worker from reading further.
 */
static CdcProduceResult
kafka_produce(CdcSink *sink, const CdcEvent *ev, char **err)
{
	KafkaSink *ks = sink->impl;
	rd_kafka_t *rk = ks->rk;
	const CdcHeaders *h = ev->h;
	rd_kafka_topic_t *rkt = kafka_topic(ks, ev->topic);
	char xid[MAXINT8LEN + 1];
	int xidlen = pg_lltoa(h->xid, xid);

	for (;;)
	{
		rd_kafka_headers_t *hdrs = rd_kafka_headers_new(h->traceparent ? 5 : 4);
		rd_kafka_resp_err_t rc;
		rd_kafka_vu_t vu[6];
		rd_kafka_error_t *error;

		rd_kafka_header_add(hdrs, "op", 2, h->op, -1);
		rd_kafka_header_add(hdrs, "table", 5, h->table, -1);
		rd_kafka_header_add(hdrs, "lsn", 3, h->lsn, -1);
		rd_kafka_header_add(hdrs, "xid", 3, xid, xidlen);
		if (h->traceparent)
			rd_kafka_header_add(hdrs, "traceparent", 11, h->traceparent, -1);

		/* The topic by its cached handle, or by name past the cache's size. */
		if (rkt != NULL)
		{
			vu[0].vtype = RD_KAFKA_VTYPE_RKT;
			vu[0].u.rkt = rkt;
		}
		else
		{
			vu[0].vtype = RD_KAFKA_VTYPE_TOPIC;
			vu[0].u.cstr = ev->topic;
		}
		vu[1].vtype = RD_KAFKA_VTYPE_KEY;
		vu[1].u.mem.ptr = (void *) ev->key;
		vu[1].u.mem.size = ev->keylen;
		vu[2].vtype = RD_KAFKA_VTYPE_VALUE;
		vu[2].u.mem.ptr = (void *) ev->payload;
		vu[2].u.mem.size = ev->len;
		vu[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
		vu[3].u.i = RD_KAFKA_MSG_F_COPY;
		vu[4].vtype = RD_KAFKA_VTYPE_HEADERS;
		vu[4].u.headers = hdrs;
		vu[5].vtype = RD_KAFKA_VTYPE_OPAQUE;
		vu[5].u.ptr = (void *) (uintptr_t) ev->opaque;
		error = rd_kafka_produceva(rk, vu, lengthof(vu));
		rc = error ? rd_kafka_error_code(error) : RD_KAFKA_RESP_ERR_NO_ERROR;
		if (error)
			rd_kafka_error_destroy(error);
		if (rc == RD_KAFKA_RESP_ERR_NO_ERROR)
			return CDC_PRODUCE_OK;
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
		rd_kafka_poll(rk, 50);
		pgstat_report_wait_end();
		cdc_sink_keepalive();
		CHECK_FOR_INTERRUPTS();
		if (sink->failed)
			return CDC_PRODUCE_RESTART;
	}
}

static void
kafka_poll(CdcSink *sink, int timeout_ms)
{
	rd_kafka_poll(sink_rk(sink), timeout_ms);
}

/* Delivery reports come within milliseconds while messages are in flight. */
static int
kafka_wait_ms(CdcSink *sink)
{
	return sink->pending > 0 ? 5 : -1;
}

/* The sink struct of a producer moved to a new config. */
static void
kafka_rebind(CdcSink *sink)
{
	sink_by_slot[sink->stats_slot] = sink;
}

const CdcSinkOps cdc_kafka_ops = {
	.kind = "kafka",
	.properties = kafka_properties,
	.open_properties = true,
	.topic_style = CDC_TOPIC_NAME,
	.event_ids = false, /* consumers deduplicate by source.lsn, seq and op */
	.validate = kafka_validate,
	.start = kafka_start,
	.stop = kafka_stop,
	.produce = kafka_produce,
	.poll = kafka_poll,
	.wait_ms = kafka_wait_ms,
	.rebind = kafka_rebind,
};
