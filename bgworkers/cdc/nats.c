/*-------------------------------------------------------------------------
 *
 * nats.c
 *	  NATS sinks: JetStream publishing with acknowledgements (libnats), or
 *	  core NATS fire-and-forget.
 *
 * JetStream mode (the default): each change is published to its route's
 * subject with a reply subject <inbox>.<n>, the way libnats' own
 * asynchronous JetStream publisher does it; the stream that takes the
 * subject answers on that subject with a PubAck ({"stream":..,"seq":..}) or
 * an error.  The change counts as delivered (cdc_sink_acked) only on a
 * PubAck.  Each message carries the header Nats-Msg-Id = the event id,
 * stable across replays, so JetStream's de-duplication window drops the
 * copies a replay from the slot publishes again (PubAck "duplicate": true,
 * which is a delivery too).  An error PubAck, no stream for a subject ("no
 * responders") or a lost connection fail the sink: the stream restarts from
 * the slot and the worker reconnects with back-off and jitter (sink.c).
 *
 * Core mode ("mode": "core"): published without a reply subject and counted
 * as delivered once handed to the connection.  Core NATS has no
 * acknowledgement: a message in flight when the connection or the server
 * goes, or published while no subscriber listens, is lost.  Documented as
 * such (docs/bv_cdc.md); use it only for data that may be lost.
 *
 * Concurrency: libnats runs its own threads (socket reader, flusher,
 * timers).  No callback of ours runs on them: acknowledgements are read
 * from a synchronous subscription (natsSubscription_NextMsg) in the
 * worker's thread, in produce() and poll().  The threads are created with
 * every signal blocked (they inherit the mask), so PostgreSQL's signal
 * handlers only ever run in the worker's thread.  Reconnection inside
 * libnats is off: a lost connection is the worker's business (replay from
 * the slot), which keeps "delivered" meaning "acknowledged by this stream".
 *
 * Memory: libnats mallocs its messages (freed at once); the in-flight ring
 * (by publish number) is allocated once at start, in the sink's context
 * under TopMemoryContext.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <pthread.h>

#include <nats/nats.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kinds.h"

#define NATS_ACK_NAP_MS    1 /* a full window waits in naps of this many ms */
#define NATS_ACKS_PER_PASS 4096

typedef struct NatsInflight
{
	uint64 opaque;
	uint32 len;
	bool used;
} NatsInflight;

typedef struct NatsSink
{
	MemoryContext cxt;
	CdcSink *sink;
	natsConnection *nc;
	natsSubscription *acks;
	char *url;
	char *inbox;
	bool core;
	int max_inflight;
	bool lost;
	char error[BV_CDC_ERRLEN];

	uint64 next_seq; /* the next publish number */
	int ninflight;
	uint64 mask;
	NatsInflight *ring;
	char reply[128];
} NatsSink;

static bool nats_lib_ready = false;

static void nats_sink_stop(CdcSink *sink);

/* The properties of a NATS sink: name, type, default, min, max, secret. */
static const CdcProperty nats_properties[] = {
	{"host", CDC_PROP_STRING, NULL, 1, 255, false},
	{"port", CDC_PROP_INT, "4222", 1, 65535, false},
	{"mode", CDC_PROP_STRING, "jetstream", 4, 9, false},
	{"stream", CDC_PROP_STRING, NULL, 1, 255, false},
	{"username", CDC_PROP_STRING, NULL, 1, 255, false},
	{"password_secret", CDC_PROP_STRING, NULL, 1, 200, true},
	{"token_secret", CDC_PROP_STRING, NULL, 1, 200, true},
	{"creds_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_ca_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_cert_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_key_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"max_inflight", CDC_PROP_INT, "4096", 1, 65535, false},
	{"connect_timeout_ms", CDC_PROP_INT, "5000", 100, 600000, false},
	{NULL}};

#define PROP(name)     cdc_prop(nats_properties, keys, values, name)
#define PROP_INT(name) cdc_prop_int(nats_properties, keys, values, name)

static void
nats_lost(NatsSink *n, const char *fmt, const char *detail)
{
	if (n->lost)
		return;
	n->lost = true;
	snprintf(n->error, sizeof(n->error), fmt, n->url, detail);
	memset(n->ring, 0, sizeof(NatsInflight) * (n->mask + 1));
	n->ninflight = 0;
	n->sink->failed = true;
	cdc_sink_note_error(n->sink, true, "%s", n->error);
	ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
					  errmsg("bv_cdc sink \"%s\": %s", n->sink->name, n->error),
					  errhint("The worker reconnects with back-off and replays unacknowledged "
							  "changes from the slot.")));
}

/* A PubAck (or an error) on <inbox>.<n>. */
static void
handle_ack(NatsSink *n, natsMsg *m)
{
	const char *subj = natsMsg_GetSubject(m);
	const char *data = natsMsg_GetData(m);
	int len = natsMsg_GetDataLength(m);
	const char *dot = strrchr(subj, '.');
	uint64 seq;
	NatsInflight *e;

	if (dot == NULL)
		return;
	seq = strtoull(dot + 1, NULL, 10);
	e = &n->ring[seq & n->mask];
	if (seq >= n->next_seq || n->next_seq - seq > n->mask || !e->used)
		return; /* not in flight (any more) */
	e->used = false;
	n->ninflight--;
	if (data != NULL && len > 0 && memmem(data, len, "\"error\"", 7) == NULL)
	{
		cdc_sink_acked(n->sink, e->opaque, e->len);
		return;
	}
	if (!n->sink->failed)
	{
		n->sink->failed = true;
		cdc_sink_note_error(n->sink, false, "JetStream refused a message: %.*s",
							Min(len, 200), data ? data : "");
	}
}

/*
 * nats_service
 *		Read the acknowledgements that arrived, waiting up to timeout_ms for
 *		the first while something is in flight; notice a lost connection.
 */
static void
nats_service(NatsSink *n, int timeout_ms)
{
	int i;

	if (n->lost)
		return;
	if (natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED)
	{
		nats_lost(n, "lost the connection to NATS server %s: %s", "connection closed");
		return;
	}
	if (n->acks == NULL)
		return;
	if (n->ninflight == 0)
		timeout_ms = 0;
	for (i = 0; i < NATS_ACKS_PER_PASS; i++)
	{
		natsMsg *m = NULL;
		natsStatus s = natsSubscription_NextMsg(&m, n->acks, timeout_ms);

		timeout_ms = 0;
		if (s == NATS_TIMEOUT)
			break;
		if (s == NATS_NO_RESPONDERS)
		{
			if (!n->sink->failed)
			{
				n->sink->failed = true;
				cdc_sink_note_error(n->sink, false,
									"no JetStream stream takes a subject bv_cdc published to "
									"(no responders)");
			}
			continue;
		}
		if (s != NATS_OK)
		{
			nats_lost(n, "lost the connection to NATS server %s: %s", natsStatus_GetText(s));
			break;
		}
		handle_ack(n, m);
		natsMsg_Destroy(m);
	}
}

/* ---- the sink kind ---- */

static void
nats_sink_validate(List *keys, List *values)
{
	const char *host = PROP("host");
	const char *mode = PROP("mode");
	const char *username = PROP("username");
	const char *secret = PROP("password_secret");
	const char *token = PROP("token_secret");
	const char *ca = PROP("tls_ca_file");
	const char *cert = PROP("tls_cert_file");
	const char *key = PROP("tls_key_file");
	const char *stream = PROP("stream");

	cdc_check_properties("nats", keys, nats_properties);
	if (host == NULL || host[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("NATS sink property \"host\" is required"),
						errhint("Set \"host\" to the server's host name or address, as in "
								"{\"host\": \"localhost\", \"port\": 4222}.")));
	if (strcmp(mode, "jetstream") != 0 && strcmp(mode, "core") != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value \"%.32s\" for NATS sink property \"mode\"", mode),
						errdetail("\"jetstream\" (the default) publishes with acknowledgements; "
								  "\"core\" publishes without, and can lose messages."),
						errhint("Use \"jetstream\" unless losing changes is acceptable.")));
	if (stream != NULL && strcmp(mode, "core") == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("NATS sink property \"stream\" needs \"mode\": \"jetstream\""),
						errhint("Remove \"stream\", or use JetStream.")));
	if (stream != NULL && strpbrk(stream, ".*> \t\r\n") != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid JetStream stream name \"%.64s\"", stream),
						errdetail("A stream name has no \".\", \"*\", \">\" or white space.")));
	if ((username == NULL) != (secret == NULL))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("NATS sink properties \"username\" and \"password_secret\" go "
							   "together"),
						errdetail("Passwords are kept in bv_core's secret store, never in the "
								  "sink's configuration."),
						errhint("Store the password with bv.secret_set(name, value) and name it "
								"in \"password_secret\".")));
	if (token != NULL && username != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("NATS sink properties \"token_secret\" and \"username\" exclude "
							   "each other"),
						errhint("Authenticate with a token, or with a user name and password.")));
	if ((cert == NULL) != (key == NULL))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("NATS sink properties \"tls_cert_file\" and \"tls_key_file\" go "
							   "together"),
						errhint("Set both for a client certificate (mTLS), or neither.")));
	if (cert != NULL && ca == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("NATS sink property \"tls_cert_file\" requires \"tls_ca_file\""),
						errdetail("bv_cdc uses TLS when \"tls_ca_file\" is set."),
						errhint("Set \"tls_ca_file\" to the certificate of the CA that signed the "
								"server's certificate.")));
}

/* Read a secret; false with errbuf when it cannot be read. */
static bool
read_secret(const char *property, const char *name, char **value, char *errbuf, size_t errlen)
{
	*value = NULL;
	if (name == NULL)
		return true;
	if ((*value = cdc_secret_get(name)) != NULL)
		return true;
	snprintf(errbuf, errlen, "could not read secret \"%s\" named by \"%s\" from bv.secrets", name,
			 property);
	return false;
}

static void
forget_secret(char **value)
{
	if (*value != NULL)
	{
		explicit_bzero(*value, strlen(*value));
		pfree(*value);
		*value = NULL;
	}
}

#define NATS_TRY(call, what)                                                                      \
	do                                                                                            \
	{                                                                                             \
		natsStatus s_ = (call);                                                                   \
		if (s_ != NATS_OK)                                                                        \
		{                                                                                         \
			snprintf(errbuf, errlen, "%s for NATS server %s: %s", what, n->url,                   \
					 nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s_)); \
			goto done;                                                                            \
		}                                                                                         \
	} while (0)

/*
 * nats_sink_start
 *		Connect (libnats' threads created with signals blocked), subscribe to
 *		the acknowledgement inbox, and check that a named stream exists.
 */
static bool
nats_sink_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	List *keys = sink->conf_keys;
	List *values = sink->conf_values;
	const char *ca = PROP("tls_ca_file");
	const char *cert = PROP("tls_cert_file");
	const char *key = PROP("tls_key_file");
	const char *creds = PROP("creds_file");
	const char *username = PROP("username");
	const char *stream = PROP("stream");
	int connect_ms = PROP_INT("connect_timeout_ms");
	char *password = NULL, *token = NULL;
	MemoryContext cxt;
	NatsSink *n;
	natsOptions *opts = NULL;
	natsInbox *inbox = NULL;
	sigset_t all, old;
	uint64 capacity = 16;
	bool ok = false;

	cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc nats sink", ALLOCSET_SMALL_SIZES);
	n = MemoryContextAllocZero(cxt, sizeof(NatsSink));
	n->cxt = cxt;
	n->sink = sink;
	n->url = MemoryContextStrdup(cxt, psprintf("%s://%s:%d", ca ? "tls" : "nats", PROP("host"),
											   PROP_INT("port")));
	n->core = strcmp(PROP("mode"), "core") == 0;
	n->max_inflight = PROP_INT("max_inflight");
	while (capacity < 2 * (uint64) n->max_inflight)
		capacity <<= 1;
	n->ring = MemoryContextAllocZero(cxt, sizeof(NatsInflight) * capacity);
	n->mask = capacity - 1;
	n->next_seq = 1;
	sink->impl = n;

	if (!read_secret("password_secret", PROP("password_secret"), &password, errbuf, errlen) ||
		!read_secret("token_secret", PROP("token_secret"), &token, errbuf, errlen))
	{
		forget_secret(&password);
		cdc_sink_note_error(sink, true, "%s", errbuf);
		nats_sink_stop(sink);
		return false;
	}

	/* libnats' threads inherit this mask: no PostgreSQL signal runs on them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	if (!nats_lib_ready)
	{
		NATS_TRY(nats_Open(-1), "could not initialise libnats");
		nats_lib_ready = true;
	}
	NATS_TRY(natsOptions_Create(&opts), "could not create options");
	NATS_TRY(natsOptions_SetURL(opts, n->url), "invalid URL");
	NATS_TRY(natsOptions_SetName(opts, sink->name), "could not set the client name");
	NATS_TRY(natsOptions_SetTimeout(opts, connect_ms), "could not set the timeout");
	NATS_TRY(natsOptions_SetAllowReconnect(opts, false), "could not turn reconnection off");
	if (username != NULL)
		NATS_TRY(natsOptions_SetUserInfo(opts, username, password), "could not set credentials");
	if (token != NULL)
		NATS_TRY(natsOptions_SetToken(opts, token), "could not set the token");
	if (creds != NULL)
		NATS_TRY(natsOptions_SetUserCredentialsFromFiles(opts, creds, NULL),
				 "could not load creds_file");
	if (ca != NULL)
	{
		NATS_TRY(natsOptions_SetSecure(opts, true), "could not turn TLS on");
		NATS_TRY(natsOptions_LoadCATrustedCertificates(opts, ca), "could not load tls_ca_file");
		if (cert != NULL)
			NATS_TRY(natsOptions_LoadCertificatesChain(opts, cert, key),
					 "could not load the client certificate");
	}
	NATS_TRY(natsConnection_Connect(&n->nc, opts), "could not connect");
	if (!n->core)
	{
		NATS_TRY(natsInbox_Create(&inbox), "could not create an inbox");
		n->inbox = MemoryContextStrdup(cxt, (const char *) inbox);
		NATS_TRY(natsConnection_SubscribeSync(&n->acks, n->nc, psprintf("%s.*", n->inbox)),
				 "could not subscribe to acknowledgements");
		NATS_TRY(natsSubscription_SetPendingLimits(n->acks, 4 * n->max_inflight + 1024, -1),
				 "could not size the acknowledgement queue");
		if (stream != NULL)
		{
			natsMsg *reply = NULL;

			NATS_TRY(natsConnection_RequestString(&reply, n->nc,
												  psprintf("$JS.API.STREAM.INFO.%s", stream), "",
												  connect_ms),
					 "could not ask JetStream about the stream (is JetStream enabled?)");
			if (natsMsg_GetData(reply) != NULL && strstr(natsMsg_GetData(reply), "\"error\""))
			{
				snprintf(errbuf, errlen, "JetStream stream \"%s\" on NATS server %s: %.150s",
						 stream, n->url, natsMsg_GetData(reply));
				natsMsg_Destroy(reply);
				goto done;
			}
			natsMsg_Destroy(reply);
		}
	}
	ok = true;

done:
	pgstat_report_wait_end();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (inbox != NULL)
		natsInbox_Destroy(inbox);
	if (opts != NULL)
		natsOptions_Destroy(opts);
	forget_secret(&password);
	forget_secret(&token);
	if (ok)
		return true;
	cdc_sink_note_error(sink, true, "%s", errbuf);
	nats_sink_stop(sink);
	return false;
}

/* Close without counting anything in flight: it is replayed from the slot. */
static void
nats_sink_stop(CdcSink *sink)
{
	NatsSink *n = sink->impl;

	if (n == NULL)
		return;
	if (n->acks != NULL)
		natsSubscription_Destroy(n->acks);
	if (n->nc != NULL)
	{
		natsConnection_Close(n->nc);
		natsConnection_Destroy(n->nc);
	}
	MemoryContextDelete(n->cxt);
	sink->impl = NULL;
	sink->pending = 0;
}

/* Set a header unless an earlier step failed or there is no value. */
static natsStatus
set_header(natsStatus s, natsMsg *m, const char *k, const char *v)
{
	return s == NATS_OK && v != NULL ? natsMsgHeader_Set(m, k, v) : s;
}

/*
 * nats_sink_produce
 *		Publish one message.  JetStream: waits, serving acknowledgements and
 *		interrupts, while max_inflight are unacknowledged.
 */
static CdcProduceResult
nats_sink_produce(CdcSink *sink, const CdcEvent *ev, char **err)
{
	NatsSink *n = sink->impl;
	natsMsg *m = NULL;
	natsStatus s;
	char xid[24];
	char *keystr = NULL;

	/*
	 * A full window: wait until half of it is acknowledged, then publish a
	 * batch.  Waiting for a single free slot would wake this thread (and
	 * libnats' reader) once per acknowledgement, a context switch per
	 * message on a busy machine.
	 */
	if (n->ninflight >= n->max_inflight)
	{
		bool woken = false;

		while (!n->lost && !sink->failed && n->ninflight > n->max_inflight / 2)
		{
			/*
			 * Nap, then take every acknowledgement that arrived: blocking
			 * in NextMsg would be woken by libnats' reader for each one.
			 */
			if (WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						  NATS_ACK_NAP_MS, PG_WAIT_EXTENSION) &
				WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				woken = true;
			}
			nats_service(n, 0);
			cdc_sink_keepalive();
			CHECK_FOR_INTERRUPTS();
		}
		if (woken)
			SetLatch(MyLatch); /* the worker's loop wanted waking: keep it */
	}
	if (n->lost || sink->failed)
	{
		*err = pstrdup(n->lost ? n->error : sink->last_error);
		sink->failed = true;
		return CDC_PRODUCE_RESTART;
	}

	if (!n->core)
		snprintf(n->reply, sizeof(n->reply), "%s." UINT64_FORMAT, n->inbox, n->next_seq);
	s = natsMsg_Create(&m, ev->topic, n->core ? NULL : n->reply, ev->payload, (int) ev->len);
	if (s == NATS_INVALID_SUBJECT || s == NATS_INVALID_ARG)
	{
		*err = psprintf("invalid NATS subject \"%.100s\"", ev->topic);
		return CDC_PRODUCE_REJECTED;
	}
	snprintf(xid, sizeof(xid), INT64_FORMAT, ev->h->xid);
	if (ev->key != NULL)
		keystr = pnstrdup(ev->key, ev->keylen);
	s = set_header(s, m, "Nats-Msg-Id", ev->event_id);
	s = set_header(s, m, "Content-Type", "application/json");
	s = set_header(s, m, "op", ev->h->op);
	s = set_header(s, m, "table", ev->h->table);
	s = set_header(s, m, "lsn", ev->h->lsn);
	s = set_header(s, m, "xid", xid);
	s = set_header(s, m, "key", keystr);
	s = set_header(s, m, "traceparent", ev->h->traceparent);
	if (s == NATS_OK)
		s = natsConnection_PublishMsg(n->nc, m);
	natsMsg_Destroy(m);
	if (keystr != NULL)
		pfree(keystr);
	if (s == NATS_MAX_PAYLOAD)
	{
		*err = psprintf("the message has %zu bytes, more than the NATS server's max_payload",
						ev->len);
		return CDC_PRODUCE_REJECTED;
	}
	if (s != NATS_OK)
	{
		nats_lost(n, "could not publish to NATS server %s: %s", natsStatus_GetText(s));
		*err = pstrdup(n->error);
		return CDC_PRODUCE_RESTART;
	}
	if (n->core)
	{
		/* No acknowledgement in core NATS: handed over is all there is. */
		cdc_sink_acked(sink, ev->opaque, ev->len);
		return CDC_PRODUCE_OK;
	}
	n->ring[n->next_seq & n->mask].used = true;
	n->ring[n->next_seq & n->mask].opaque = ev->opaque;
	n->ring[n->next_seq & n->mask].len = (uint32) ev->len;
	n->next_seq++;
	n->ninflight++;
	if ((n->next_seq & 63) == 0)
		nats_service(n, 0);
	return CDC_PRODUCE_OK;
}

static void
nats_sink_poll(CdcSink *sink, int timeout_ms)
{
	nats_service((NatsSink *) sink->impl, timeout_ms);
}

static int
nats_sink_wait_ms(CdcSink *sink)
{
	return ((NatsSink *) sink->impl)->ninflight > 0 ? 1 : -1;
}

static void
nats_sink_rebind(CdcSink *sink)
{
	((NatsSink *) sink->impl)->sink = sink;
}

const CdcSinkOps cdc_nats_ops = {
	.kind = "nats",
	.properties = nats_properties,
	.topic_style = CDC_TOPIC_LEVELS,
	.topic_reserved = ".*> \t\r\n",
	.event_ids = true,
	.validate = nats_sink_validate,
	.start = nats_sink_start,
	.stop = nats_sink_stop,
	.produce = nats_sink_produce,
	.poll = nats_sink_poll,
	.wait_ms = nats_sink_wait_ms,
	.rebind = nats_sink_rebind,
};
