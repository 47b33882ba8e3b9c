/*-------------------------------------------------------------------------
 *
 * amqp.c
 *	  AMQP 0-9-1 sinks (RabbitMQ): a librabbitmq connection per sink, with
 *	  publisher confirms, driven from the worker's own thread.
 *
 * Each sink gets one connection and one channel in confirm mode.  A change
 * handed to produce() is published persistent (delivery mode 2) and
 * mandatory to the sink's exchange (a template: {schema}, {table}) with the
 * route's topic as routing key; it counts as delivered for the slot
 * (cdc_sink_acked) only when the broker confirms it (basic.ack).  A
 * basic.nack fails the sink: the stream restarts from the slot and the
 * worker reconnects with back-off and jitter (sink.c, worker.c), so nothing
 * is lost and a consumer may see a change twice (message_id, the event id,
 * is stable across replays).
 *
 * Unroutable messages: a mandatory message that no queue is bound for comes
 * back as basic.return, then is confirmed.  By the route's option
 * on_return it is then either parked in bv_cdc.dead_letter (reason
 * "permanent", default "dead_letter": the stream goes on) or it fails the
 * sink ("retry": replayed from the slot, with back-off, until a binding
 * exists).  The dead letter row is written before the confirmation is
 * counted, so the slot never passes a returned message that is not parked.
 *
 * Headers: op, table, lsn, xid, key, event_id and traceparent (if any), as
 * an AMQP field table; message_id is the event id, content_type
 * application/json.
 *
 * Concurrency: librabbitmq has no threads.  produce() publishes (a blocking
 * socket write; the window of max_inflight unconfirmed messages bounds it)
 * and serves the confirmations that have arrived; poll() waits for more.
 * Delivery tags are consecutive from 1 on the channel, so the in-flight
 * window is a ring indexed by tag.
 *
 * Memory: librabbitmq's own buffers (released after each service pass); the
 * ring is allocated once at start, in the sink's context under
 * TopMemoryContext (a running sink outlives the configuration it was
 * started from, as mqtt.c's).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "batch.h"
#include "kinds.h"

#define AMQP_CHANNEL         1
#define AMQP_WAIT_SLICE_MS   50
#define AMQP_FRAMES_PER_PASS 4096
#define AMQP_EVENT_ID_LEN    80

typedef struct AmqpInflight
{
	uint64 opaque;
	uint32 len;
	bool used;
	bool retry;    /* its route's on_return = retry */
	bool returned; /* came back unroutable: its confirmation is no delivery */
	char event_id[AMQP_EVENT_ID_LEN];
} AmqpInflight;

typedef struct AmqpSink
{
	MemoryContext cxt;
	CdcSink *sink;
	amqp_connection_state_t conn;
	char *host;
	int port;
	char *exchange_tmpl;
	bool exchange_fixed; /* no placeholders */
	StringInfoData exchange;
	int max_inflight;

	bool connected;
	bool lost;
	bool stopping;
	char error[BV_CDC_ERRLEN];

	/* unconfirmed: tags [first_tag, next_tag) */
	uint64 next_tag;
	uint64 first_tag;
	int ninflight;
	uint64 mask;
	AmqpInflight *ring;
} AmqpSink;

static void amqp_sink_stop(CdcSink *sink);

/* The properties of an AMQP sink: name, type, default, min, max, secret. */
static const CdcProperty amqp_properties[] = {
	{"host", CDC_PROP_STRING, NULL, 1, 255, false},
	{"port", CDC_PROP_INT, "5672", 1, 65535, false},
	{"vhost", CDC_PROP_STRING, "/", 1, 255, false},
	{"username", CDC_PROP_STRING, NULL, 1, 255, false},
	{"password_secret", CDC_PROP_STRING, NULL, 1, 200, true},
	{"exchange", CDC_PROP_STRING, "amq.topic", 0, 255, false},
	{"tls_ca_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_cert_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_key_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"heartbeat_s", CDC_PROP_INT, "30", 0, 3600, false},
	{"max_inflight", CDC_PROP_INT, "4096", 1, 65535, false},
	{"connect_timeout_ms", CDC_PROP_INT, "5000", 100, 600000, false},
	{"frame_max", CDC_PROP_INT, "131072", 4096, 16777216, false},
	{NULL}};

#define PROP(name)     cdc_prop(amqp_properties, keys, values, name)
#define PROP_INT(name) cdc_prop_int(amqp_properties, keys, values, name)

/* ---- errors ---- */

static const char *
reply_text(amqp_rpc_reply_t r, char *buf, size_t len)
{
	switch (r.reply_type)
	{
		case AMQP_RESPONSE_NORMAL:
			return "no error";
		case AMQP_RESPONSE_NONE:
			return "missing reply";
		case AMQP_RESPONSE_LIBRARY_EXCEPTION:
			return amqp_error_string2(r.library_error);
		case AMQP_RESPONSE_SERVER_EXCEPTION:
			if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
			{
				amqp_connection_close_t *c = r.reply.decoded;

				snprintf(buf, len, "%u %.*s", c->reply_code, (int) Min(c->reply_text.len, 200),
						 (char *) c->reply_text.bytes);
				return buf;
			}
			if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
			{
				amqp_channel_close_t *c = r.reply.decoded;

				snprintf(buf, len, "%u %.*s", c->reply_code, (int) Min(c->reply_text.len, 200),
						 (char *) c->reply_text.bytes);
				return buf;
			}
			snprintf(buf, len, "unexpected method 0x%08X", r.reply.id);
			return buf;
	}
	return "unknown error";
}

/* The connection failed or was lost: forget what is in flight (replayed). */
static void
amqp_lost(AmqpSink *a, const char *what)
{
	if (a->stopping || a->lost)
		return;
	a->lost = true;
	snprintf(a->error, sizeof(a->error), "%s AMQP broker %s:%d: %s",
			 a->connected ? "lost the connection to" : "could not connect to", a->host, a->port,
			 what);
	if (a->connected)
	{
		a->connected = false;
		memset(a->ring, 0, sizeof(AmqpInflight) * (a->mask + 1));
		a->ninflight = 0;
		a->sink->failed = true;
		cdc_sink_note_error(a->sink, true, "%s", a->error);
		ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
						  errmsg("bv_cdc sink \"%s\": %s", a->sink->name, a->error),
						  errhint("The worker reconnects with back-off and replays unconfirmed "
								  "changes from the slot.")));
	}
}

/* ---- confirmations ---- */

static void
confirm_one(AmqpSink *a, uint64 tag, bool ok)
{
	AmqpInflight *e;

	if (tag < a->first_tag || tag >= a->next_tag)
		return;
	e = &a->ring[tag & a->mask];
	if (!e->used)
		return;
	e->used = false;
	a->ninflight--;
	if (ok && e->returned)
		return; /* the sink failed when it came back: replayed */
	if (ok)
		cdc_sink_acked(a->sink, e->opaque, e->len);
	else if (!a->sink->failed)
	{
		/* The broker could not take it (basic.nack): replay from the slot. */
		a->sink->failed = true;
		cdc_sink_note_error(a->sink, false, "AMQP broker %s:%d refused a message (basic.nack)",
							a->host, a->port);
	}
}

static void
confirm(AmqpSink *a, uint64 tag, bool multiple, bool ok)
{
	if (multiple)
	{
		uint64 t;

		for (t = a->first_tag; t <= tag && t < a->next_tag; t++)
			confirm_one(a, t, ok);
	}
	else
		confirm_one(a, tag, ok);
	while (a->first_tag < a->next_tag && !a->ring[a->first_tag & a->mask].used)
		a->first_tag++;
}

static const char *
header_text(const amqp_basic_properties_t *p, const char *name)
{
	int i;

	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
		return NULL;
	for (i = 0; i < p->headers.num_entries; i++)
	{
		const amqp_table_entry_t *e = &p->headers.entries[i];

		if (e->key.len == strlen(name) && memcmp(e->key.bytes, name, e->key.len) == 0 &&
			(e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
			return pnstrdup(e->value.value.bytes.bytes, e->value.value.bytes.len);
	}
	return NULL;
}

/*
 * park_returned
 *		A returned (unroutable) message into bv_cdc.dead_letter, in its own
 *		transaction.  false (and the sink failed) if that fails.
 */
static bool
park_returned(AmqpSink *a, const amqp_message_t *msg, const char *event_id, const char *rk,
			  const char *why)
{
	MemoryContext outer = CurrentMemoryContext;
	const amqp_basic_properties_t *p = &msg->properties;
	const char *key = header_text(p, "key");
	const char *op = header_text(p, "op");
	const char *tbl = header_text(p, "table");
	const char *lsn = header_text(p, "lsn");
	const char *tp = header_text(p, "traceparent");
	volatile bool ok = true;

	PG_TRY();
	{
		Oid types[9] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
						TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum v[9];
		char n[10] = "         ";

		cdc_begin_batch("bv_cdc: parking a returned AMQP message");
		v[0] = CStringGetTextDatum(a->sink->name);
		v[1] = CStringGetTextDatum(event_id);
		v[2] = CStringGetTextDatum(key ? key : "");
		if (rk)
			v[3] = CStringGetTextDatum(rk);
		else
			n[3] = 'n';
		if (op)
			v[4] = CStringGetTextDatum(op);
		else
			n[4] = 'n';
		if (tbl)
			v[5] = CStringGetTextDatum(tbl);
		else
			n[5] = 'n';
		if (lsn)
			v[6] = CStringGetTextDatum(lsn);
		else
			n[6] = 'n';
		if (tp)
			v[7] = CStringGetTextDatum(tp);
		else
			n[7] = 'n';
		v[8] = PointerGetDatum(cstring_to_text_with_len(msg->body.bytes, (int) msg->body.len));
		if (SPI_execute_with_args(
				psprintf("INSERT INTO bv_cdc.dead_letter (sink, event_id, key, topic, op, tbl, "
						 "lsn, traceparent, body, attempts, first_attempt_at, last_attempt_at, "
						 "last_error, reason) VALUES ($1, $2, $3, $4, $5, $6, $7::pg_lsn, $8, "
						 "$9, 1, now(), now(), %s, 'permanent')",
						 quote_literal_cstr(why)),
				9, types, v, n, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into bv_cdc.dead_letter");
		cdc_end_batch();
	}
	PG_CATCH();
	{
		char *m = cdc_batch_failed(outer);

		ok = false;
		a->sink->failed = true;
		cdc_sink_note_error(a->sink, false, "could not park a returned AMQP message: %s", m);
	}
	PG_END_TRY();
	return ok;
}

/*
 * A basic.return: find the message by its message_id among those in
 * flight; by its route's option, park it (then its confirmation counts) or
 * fail the sink (it is replayed).
 */
static void
handle_return(AmqpSink *a, const amqp_basic_return_t *ret, const amqp_message_t *msg)
{
	const amqp_basic_properties_t *p = &msg->properties;
	char *event_id = (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
						 ? pnstrdup(p->message_id.bytes, p->message_id.len)
						 : pstrdup("");
	char *rk = pnstrdup(ret->routing_key.bytes, ret->routing_key.len);
	AmqpInflight *e = NULL;
	uint64 t;
	char why[BV_CDC_ERRLEN];

	for (t = a->first_tag; t < a->next_tag; t++)
		if (a->ring[t & a->mask].used && strcmp(a->ring[t & a->mask].event_id, event_id) == 0)
		{
			e = &a->ring[t & a->mask];
			break;
		}

	snprintf(why, sizeof(why), "unroutable: %u %.*s (exchange \"%.*s\", routing key \"%.*s\")",
			 ret->reply_code, (int) Min(ret->reply_text.len, 64), (char *) ret->reply_text.bytes,
			 (int) Min(ret->exchange.len, 64), (char *) ret->exchange.bytes,
			 (int) Min(ret->routing_key.len, 100), (char *) ret->routing_key.bytes);
	if (e == NULL || e->retry)
	{
		/* retry (or not ours any more): replayed from the slot with back-off */
		if (e != NULL)
			e->returned = true;
		if (!a->sink->failed)
		{
			a->sink->failed = true;
			cdc_sink_note_error(a->sink, false, "AMQP broker %s:%d returned a message: %s",
								a->host, a->port, why);
		}
		return;
	}
	if (park_returned(a, msg, event_id, rk, why))
		a->sink->n_errors++;
}

/*
 * amqp_service
 *		Read the frames that arrived (waiting up to timeout_ms for the first
 *		one when something is in flight): confirmations, returns, the
 *		broker closing the channel or connection.  librabbitmq answers
 *		heartbeats inside.
 */
static void
amqp_service(AmqpSink *a, int timeout_ms)
{
	int n;

	if (!a->connected)
		return;
	if (a->ninflight == 0)
		timeout_ms = 0;
	for (n = 0; n < AMQP_FRAMES_PER_PASS && a->connected; n++)
	{
		amqp_frame_t frame;
		struct timeval tv;
		int rc;

		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (timeout_ms % 1000) * 1000;
		rc = amqp_simple_wait_frame_noblock(a->conn, &frame, &tv);
		timeout_ms = 0;
		if (rc == AMQP_STATUS_TIMEOUT)
			break;
		if (rc != AMQP_STATUS_OK)
		{
			amqp_lost(a, amqp_error_string2(rc));
			break;
		}
		if (frame.frame_type != AMQP_FRAME_METHOD)
			continue;
		switch (frame.payload.method.id)
		{
			case AMQP_BASIC_ACK_METHOD:
			{
				amqp_basic_ack_t *ack = frame.payload.method.decoded;

				confirm(a, ack->delivery_tag, ack->multiple, true);
				break;
			}
			case AMQP_BASIC_NACK_METHOD:
			{
				amqp_basic_nack_t *nack = frame.payload.method.decoded;

				confirm(a, nack->delivery_tag, nack->multiple, false);
				break;
			}
			case AMQP_BASIC_RETURN_METHOD:
			{
				amqp_basic_return_t ret = *(amqp_basic_return_t *) frame.payload.method.decoded;
				amqp_message_t msg;
				amqp_rpc_reply_t r;

				/* the method's strings live in the pool the next read may reuse */
				ret.exchange = amqp_bytes_malloc_dup(ret.exchange);
				ret.routing_key = amqp_bytes_malloc_dup(ret.routing_key);
				ret.reply_text = amqp_bytes_malloc_dup(ret.reply_text);
				r = amqp_read_message(a->conn, frame.channel, &msg, 0);
				if (r.reply_type != AMQP_RESPONSE_NORMAL)
				{
					char buf[BV_CDC_ERRLEN];

					amqp_lost(a, reply_text(r, buf, sizeof(buf)));
				}
				else
				{
					handle_return(a, &ret, &msg);
					amqp_destroy_message(&msg);
				}
				amqp_bytes_free(ret.exchange);
				amqp_bytes_free(ret.routing_key);
				amqp_bytes_free(ret.reply_text);
				break;
			}
			case AMQP_CHANNEL_CLOSE_METHOD:
			case AMQP_CONNECTION_CLOSE_METHOD:
			{
				amqp_rpc_reply_t r;
				char buf[BV_CDC_ERRLEN];

				memset(&r, 0, sizeof(r));
				r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
				r.reply = frame.payload.method;
				amqp_lost(a, reply_text(r, buf, sizeof(buf)));
				break;
			}
			default:
				break;
		}
	}
	if (a->conn != NULL)
		amqp_maybe_release_buffers(a->conn);
}

/* ---- the sink kind ---- */

static void
amqp_sink_validate(List *keys, List *values)
{
	const char *host = PROP("host");
	const char *username = PROP("username");
	const char *secret = PROP("password_secret");
	const char *ca = PROP("tls_ca_file");
	const char *cert = PROP("tls_cert_file");
	const char *key = PROP("tls_key_file");
	const char *exchange = PROP("exchange");
	const char *p;

	cdc_check_properties("amqp", keys, amqp_properties);
	if (host == NULL || host[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("AMQP sink property \"host\" is required"),
						errhint("Set \"host\" to the broker's host name or address, as in "
								"{\"host\": \"localhost\", \"port\": 5672}.")));
	if (secret != NULL && username == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("AMQP sink property \"password_secret\" requires \"username\""),
						errhint("Set \"username\" as well.")));
	if (username != NULL && secret == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("AMQP sink property \"username\" requires \"password_secret\""),
				 errdetail("Passwords are kept in bv_core's secret store, never in the sink's "
						   "configuration."),
				 errhint("Store the password with bv.secret_set(name, value) and set "
						 "\"password_secret\" to its name; omit both for RabbitMQ's local guest "
						 "account.")));
	if ((cert == NULL) != (key == NULL))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("AMQP sink properties \"tls_cert_file\" and \"tls_key_file\" go "
							   "together"),
						errhint("Set both for a client certificate (mTLS), or neither.")));
	if (cert != NULL && ca == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("AMQP sink property \"tls_cert_file\" requires \"tls_ca_file\""),
						errdetail("bv_cdc uses TLS when \"tls_ca_file\" is set."),
						errhint("Set \"tls_ca_file\" to the certificate of the CA that signed the "
								"broker's certificate.")));
	for (p = exchange; *p; p++)
	{
		if (strncmp(p, "{schema}", 8) == 0)
			p += 7;
		else if (strncmp(p, "{table}", 7) == 0)
			p += 6;
		else if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				   (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == ':'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid AMQP exchange template \"%.64s\"", exchange),
					 errdetail("An exchange name has letters, digits, \"-\", \"_\", \".\" and "
							   "\":\"; the template may use {schema} and {table}."),
					 errhint("For example \"amq.topic\" (the default) or \"cdc.{schema}\".")));
	}
}

/* The exchange of a message: the template with the table's names. */
static const char *
exchange_for(AmqpSink *a, const char *table)
{
	const char *dot;
	const char *p;

	if (a->exchange_fixed)
		return a->exchange_tmpl;
	dot = strchr(table, '.');
	resetStringInfo(&a->exchange);
	for (p = a->exchange_tmpl; *p; p++)
	{
		const char *s = NULL, *e = NULL;

		if (strncmp(p, "{schema}", 8) == 0)
		{
			s = table;
			e = dot ? dot : table + strlen(table);
			p += 7;
		}
		else if (strncmp(p, "{table}", 7) == 0)
		{
			s = dot ? dot + 1 : table;
			e = s + strlen(s);
			p += 6;
		}
		if (s == NULL)
			appendStringInfoChar(&a->exchange, *p);
		else
			for (; s < e; s++)
				appendStringInfoChar(&a->exchange,
									 ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
									  (*s >= '0' && *s <= '9') || *s == '-' || *s == '_')
										 ? *s
										 : '_');
	}
	if (a->exchange.len > 255)
		a->exchange.data[255] = '\0';
	return a->exchange.data;
}

/* A step of start: false with errbuf set when the broker said no. */
static bool
rpc_ok(AmqpSink *a, amqp_rpc_reply_t r, const char *step, char *errbuf, size_t errlen)
{
	char buf[BV_CDC_ERRLEN];

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return true;
	snprintf(errbuf, errlen, "AMQP broker %s:%d: %s failed: %s", a->host, a->port, step,
			 reply_text(r, buf, sizeof(buf)));
	return false;
}

/*
 * amqp_sink_start
 *		Connect (TCP or TLS), log in, open the channel in confirm mode and
 *		check that a fixed exchange exists.  Each step waits at most
 *		connect_timeout_ms.  false with errbuf on failure.
 */
static bool
amqp_sink_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	List *keys = sink->conf_keys;
	List *values = sink->conf_values;
	const char *username = PROP("username");
	const char *secret = PROP("password_secret");
	const char *ca = PROP("tls_ca_file");
	const char *cert = PROP("tls_cert_file");
	const char *key = PROP("tls_key_file");
	int connect_ms = PROP_INT("connect_timeout_ms");
	MemoryContext cxt;
	AmqpSink *a;
	amqp_socket_t *sock;
	struct timeval tv;
	uint64 capacity = 16;
	char *password = NULL;
	amqp_rpc_reply_t r;
	int rc;

	cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc amqp sink", ALLOCSET_SMALL_SIZES);
	a = MemoryContextAllocZero(cxt, sizeof(AmqpSink));
	a->cxt = cxt;
	a->sink = sink;
	a->host = MemoryContextStrdup(cxt, PROP("host"));
	a->port = PROP_INT("port");
	a->exchange_tmpl = MemoryContextStrdup(cxt, PROP("exchange"));
	a->exchange_fixed = strchr(a->exchange_tmpl, '{') == NULL;
	a->max_inflight = PROP_INT("max_inflight");
	while (capacity < 2 * (uint64) a->max_inflight)
		capacity <<= 1;
	a->ring = MemoryContextAllocZero(cxt, sizeof(AmqpInflight) * capacity);
	a->mask = capacity - 1;
	a->next_tag = a->first_tag = 1;
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		initStringInfo(&a->exchange);
		MemoryContextSwitchTo(old);
	}
	sink->impl = a;

	if (secret != NULL && (password = cdc_secret_get(secret)) == NULL)
	{
		snprintf(errbuf, errlen,
				 "could not read secret \"%s\" named by \"password_secret\" from bv.secrets",
				 secret);
		goto fail;
	}

	a->conn = amqp_new_connection();
	if (a->conn == NULL)
	{
		snprintf(errbuf, errlen, "could not create an AMQP connection: out of memory");
		goto fail;
	}
	if (ca != NULL)
	{
		sock = amqp_ssl_socket_new(a->conn);
		if (sock == NULL)
		{
			snprintf(errbuf, errlen, "could not create a TLS socket for the AMQP broker");
			goto fail;
		}
		/* Peer and host name verification stay on. */
		amqp_ssl_socket_set_verify_peer(sock, 1);
		amqp_ssl_socket_set_verify_hostname(sock, 1);
		if ((rc = amqp_ssl_socket_set_cacert(sock, ca)) != AMQP_STATUS_OK)
		{
			snprintf(errbuf, errlen, "could not load tls_ca_file \"%s\": %s", ca,
					 amqp_error_string2(rc));
			goto fail;
		}
		if (cert != NULL && (rc = amqp_ssl_socket_set_key(sock, cert, key)) != AMQP_STATUS_OK)
		{
			snprintf(errbuf, errlen, "could not load the client certificate \"%s\": %s", cert,
					 amqp_error_string2(rc));
			goto fail;
		}
	}
	else if ((sock = amqp_tcp_socket_new(a->conn)) == NULL)
	{
		snprintf(errbuf, errlen, "could not create a socket for the AMQP broker");
		goto fail;
	}

	tv.tv_sec = connect_ms / 1000;
	tv.tv_usec = (connect_ms % 1000) * 1000;
	amqp_set_handshake_timeout(a->conn, &tv);
	amqp_set_rpc_timeout(a->conn, &tv);
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	rc = amqp_socket_open_noblock(sock, a->host, a->port, &tv);
	pgstat_report_wait_end();
	if (rc != AMQP_STATUS_OK)
	{
		snprintf(errbuf, errlen, "could not connect to AMQP broker %s:%d: %s", a->host, a->port,
				 amqp_error_string2(rc));
		goto fail;
	}
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	r = amqp_login(a->conn, PROP("vhost"), 0, PROP_INT("frame_max"), PROP_INT("heartbeat_s"),
				   AMQP_SASL_METHOD_PLAIN, username ? username : "guest",
				   password ? password : "guest");
	pgstat_report_wait_end();
	if (password != NULL)
	{
		explicit_bzero(password, strlen(password));
		pfree(password);
		password = NULL;
	}
	if (!rpc_ok(a, r, "login", errbuf, errlen))
		goto fail;
	amqp_channel_open(a->conn, AMQP_CHANNEL);
	if (!rpc_ok(a, amqp_get_rpc_reply(a->conn), "channel.open", errbuf, errlen))
		goto fail;
	amqp_confirm_select(a->conn, AMQP_CHANNEL);
	if (!rpc_ok(a, amqp_get_rpc_reply(a->conn), "confirm.select", errbuf, errlen))
		goto fail;
	if (a->exchange_fixed && a->exchange_tmpl[0] != '\0')
	{
		/* passive: does it exist?  (The broker closes the channel if not.) */
		amqp_exchange_declare(a->conn, AMQP_CHANNEL, amqp_cstring_bytes(a->exchange_tmpl),
							  amqp_cstring_bytes("topic"), 1, 0, 0, 0, amqp_empty_table);
		if (!rpc_ok(a, amqp_get_rpc_reply(a->conn), "checking the exchange", errbuf, errlen))
			goto fail;
	}
	a->connected = true;
	ereport(DEBUG1, (errmsg_internal("bv_cdc sink %s connected to AMQP broker %s:%d", sink->name,
									 a->host, a->port)));
	return true;

fail:
	if (password != NULL)
	{
		explicit_bzero(password, strlen(password));
		pfree(password);
	}
	cdc_sink_note_error(sink, true, "%s", errbuf);
	amqp_sink_stop(sink);
	return false;
}

/* Close without counting anything in flight: it is replayed from the slot. */
static void
amqp_sink_stop(CdcSink *sink)
{
	AmqpSink *a = sink->impl;

	if (a == NULL)
		return;
	a->stopping = true;
	if (a->conn != NULL)
	{
		if (a->connected)
		{
			struct timeval tv = {1, 0};

			amqp_set_rpc_timeout(a->conn, &tv);
			(void) amqp_channel_close(a->conn, AMQP_CHANNEL, AMQP_REPLY_SUCCESS);
			(void) amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
		}
		(void) amqp_destroy_connection(a->conn);
	}
	MemoryContextDelete(a->cxt);
	sink->impl = NULL;
	sink->pending = 0;
}

static void
set_header(amqp_table_entry_t *e, const char *key, const char *value)
{
	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_UTF8;
	e->value.value.bytes = amqp_cstring_bytes(value);
}

/*
 * amqp_sink_produce
 *		Publish one message (persistent, mandatory).  Waits, serving
 *		confirmations and interrupts, while max_inflight are unconfirmed.
 */
static CdcProduceResult
amqp_sink_produce(CdcSink *sink, const CdcEvent *ev, char **err)
{
	AmqpSink *a = sink->impl;
	amqp_basic_properties_t props;
	amqp_table_entry_t hdr[10];
	int nh = 0;
	AmqpInflight *e;
	const char *exchange;
	int rc;

	if (strlen(ev->topic) > 255)
	{
		*err = psprintf("the routing key has %zu bytes, more than AMQP's limit of 255",
						strlen(ev->topic));
		return CDC_PRODUCE_REJECTED;
	}
	/*
	 * A full window: wait until half of it is confirmed, then publish a
	 * batch, rather than one message per confirmation (a wake-up each).
	 */
	if (a->ninflight >= a->max_inflight)
	{
		while (a->connected && !sink->failed && a->ninflight > a->max_inflight / 2)
		{
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			amqp_service(a, AMQP_WAIT_SLICE_MS);
			pgstat_report_wait_end();
			cdc_sink_keepalive();
			CHECK_FOR_INTERRUPTS();
		}
	}
	if (!a->connected || sink->failed)
	{
		*err = pstrdup(a->lost ? a->error : sink->last_error);
		sink->failed = true;
		return CDC_PRODUCE_RESTART;
	}

	set_header(&hdr[nh++], "op", ev->h->op);
	set_header(&hdr[nh++], "table", ev->h->table);
	set_header(&hdr[nh++], "lsn", ev->h->lsn);
	hdr[nh].key = amqp_cstring_bytes("xid");
	hdr[nh].value.kind = AMQP_FIELD_KIND_I64;
	hdr[nh++].value.value.i64 = ev->h->xid;
	if (ev->key != NULL)
	{
		hdr[nh].key = amqp_cstring_bytes("key");
		hdr[nh].value.kind = AMQP_FIELD_KIND_UTF8;
		hdr[nh].value.value.bytes.bytes = (void *) ev->key;
		hdr[nh++].value.value.bytes.len = ev->keylen;
	}
	if (ev->event_id != NULL && ev->event_id[0] != '\0')
		set_header(&hdr[nh++], "event_id", ev->event_id);
	if (ev->h->traceparent != NULL)
		set_header(&hdr[nh++], "traceparent", ev->h->traceparent);

	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
				   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	props.message_id = amqp_cstring_bytes(ev->event_id ? ev->event_id : "");
	props.headers.num_entries = nh;
	props.headers.entries = hdr;

	exchange = exchange_for(a, ev->h->table);
	e = &a->ring[a->next_tag & a->mask];
	Assert(!e->used);
	rc = amqp_basic_publish(a->conn, AMQP_CHANNEL, amqp_cstring_bytes(exchange),
							amqp_cstring_bytes(ev->topic), 1, 0, &props,
							(amqp_bytes_t){.len = ev->len, .bytes = (void *) ev->payload});
	if (rc != AMQP_STATUS_OK)
	{
		amqp_lost(a, amqp_error_string2(rc));
		*err = pstrdup(a->error);
		sink->failed = true;
		return CDC_PRODUCE_RESTART;
	}
	e->used = true;
	e->opaque = ev->opaque;
	e->len = (uint32) ev->len;
	e->retry = ev->route->return_retry;
	e->returned = false;
	strlcpy(e->event_id, ev->event_id ? ev->event_id : "", sizeof(e->event_id));
	a->next_tag++;
	a->ninflight++;
	/* serve whatever confirmations are already there, without waiting */
	if (amqp_data_in_buffer(a->conn) || amqp_frames_enqueued(a->conn) || (a->next_tag & 63) == 0)
		amqp_service(a, 0);
	return CDC_PRODUCE_OK;
}

static void
amqp_sink_poll(CdcSink *sink, int timeout_ms)
{
	amqp_service((AmqpSink *) sink->impl, timeout_ms);
}

static int
amqp_sink_wait_ms(CdcSink *sink)
{
	return ((AmqpSink *) sink->impl)->ninflight > 0 ? 1 : -1;
}

static void
amqp_sink_rebind(CdcSink *sink)
{
	((AmqpSink *) sink->impl)->sink = sink;
}

const CdcSinkOps cdc_amqp_ops = {
	.kind = "amqp",
	.properties = amqp_properties,
	.topic_style = CDC_TOPIC_LEVELS,
	.topic_reserved = ".*# ",
	.event_ids = true,
	.validate = amqp_sink_validate,
	.start = amqp_sink_start,
	.stop = amqp_sink_stop,
	.produce = amqp_sink_produce,
	.poll = amqp_sink_poll,
	.wait_ms = amqp_sink_wait_ms,
	.rebind = amqp_sink_rebind,
};
