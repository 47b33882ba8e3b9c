/*-------------------------------------------------------------------------
 *
 * nats.c
 *	  NATS sinks: JetStream publishing with acknowledgements (libnats), or
 *	  core NATS fire-and-forget.
 *
 * JetStream mode (the default): each change is published to its route's
 * subject with a reply subject <inbox>.<n> (n: the publish number), the
 * way libnats' own asynchronous JetStream publisher (js_PublishMsgAsync)
 * does it, without its per-message hash table and copies; the stream that takes the
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
 * Asynchronous publishing (JetStream): the worker publishes without waiting
 * (libnats buffers, its flusher thread writes), at most max_inflight
 * unanswered.  Answers arrive on an asynchronous subscription to
 * <inbox>.*: its callback, on libnats' delivery thread, only marks the
 * slot of publish number <n> ACKED or REFUSED in a ring shared with the
 * worker (NatsAcks, atomics, no lock) and, when the worker waits for a
 * mark, writes an eventfd once.  The worker reads the ring in publish
 * order: each ACKED slot is a delivery (cdc_sink_acked), and the first
 * REFUSED one fails the sink, so that nothing after it counts; the stream
 * restarts from the slot's confirmed position, which never passed an
 * unacknowledged change, and publishes that change and everything after it
 * again (JetStream drops the copies it already stored by Nats-Msg-Id).
 * When the window is full the worker waits, on a wait set of its latch,
 * postmaster death and that eventfd, until half of the window is
 * answered: one wake-up per half window, not one per acknowledgement.
 *
 * Threads and memory: the callback calls nothing of PostgreSQL (no palloc,
 * no ereport, no latch).  NatsAcks is malloc'd and reference-counted: the
 * worker and the subscription each hold a reference, and the subscription
 * lets go in its on-complete callback, after its last message, so a
 * callback never touches freed memory.  libnats' threads are created with
 * every signal blocked (they inherit the mask), so PostgreSQL's signal
 * handlers only ever run in the worker's thread.  Reconnection inside
 * libnats is off: a lost connection is the worker's business (replay from
 * the slot), which keeps "delivered" meaning "acknowledged by this stream".
 * The in-flight ring (opaque numbers by publish number) and the wait sets
 * are allocated once at start, in the sink's context under
 * TopMemoryContext.  libnats mallocs each message we publish; it is freed
 * right after the publish, in this thread (natsMsg_free, see below).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <nats/nats.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kinds.h"

#define NATS_WAIT_MS 100 /* longest wait for an answer before serving interrupts */

/*
 * libnats' destructor of a message: exported by libnats.so but not declared
 * in nats.h.  natsMsg_Destroy queues a message for libnats' garbage
 * collector thread, which calls this: a futex wake-up per message, and
 * every malloc'd piece of the message (a dozen, with its headers) freed by
 * another thread than the one that allocated it, which empties glibc's
 * per-thread caches and makes the next message's mallocs take the arena's
 * lock.  Freeing our own published messages here, in the thread that made
 * them, is the same function without the hand-over (ADR 0033).
 */
extern void natsMsg_free(void *object);

/* States of a slot of the acknowledgement ring (NatsAcks.slots). */
#define NATS_SLOT_FREE    0
#define NATS_SLOT_PENDING 1 /* published, no answer yet */
#define NATS_SLOT_ACKED   2 /* a PubAck (or a duplicate's) */
#define NATS_SLOT_REFUSED 3 /* an error PubAck, or no responders */

/*
 * What the acknowledgement callback (a libnats thread) shares with the
 * worker: malloc'd, never palloc'd, and freed by whichever of the two lets
 * go of it last (refs), since libnats' delivery thread may outlive the sink.
 * Slot i holds publish number seq (i = seq & mask): the worker writes seq,
 * then PENDING; the callback moves PENDING to ACKED or REFUSED when the
 * answer is for that seq; the worker reads answers in publish order and
 * frees the slot.
 */
typedef struct NatsAckSlot
{
	pg_atomic_uint64 seq;
	pg_atomic_uint32 state;
} NatsAckSlot;

typedef struct NatsAcks
{
	pg_atomic_uint32 refs;
	pg_atomic_uint64 answered;    /* answers taken by the callback */
	pg_atomic_uint64 wake_at;     /* write evfd when answered reaches this; 0: nobody waits */
	pg_atomic_uint32 error_state; /* 0: no refusal yet, 1: being written, 2: error[] set */
	int evfd;                     /* eventfd the worker waits on */
	uint64 mask;
	char error[200]; /* the first refusal's answer */
	NatsAckSlot slots[FLEXIBLE_ARRAY_MEMBER];
} NatsAcks;

typedef struct NatsInflight
{
	uint64 opaque;
	uint32 len;
} NatsInflight;

typedef struct NatsSink
{
	MemoryContext cxt;
	CdcSink *sink;
	natsConnection *nc;
	natsSubscription *acks;
	NatsAcks *shared;       /* NULL in core mode */
	WaitEventSet *wes;      /* latch, postmaster death, shared->evfd */
	WaitEventSet *wes_poll; /* the same without the latch (poll's waits) */
	char *url;
	char *inbox;
	bool core;
	int max_inflight;
	bool lost;
	char error[BV_CDC_ERRLEN];

	uint64 next_seq; /* the next publish number */
	uint64 tail;     /* the oldest publish number not answered (in order) */
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

#define NATS_NO_RESPONDERS_TEXT \
	"no JetStream stream takes a subject bv_cdc published to (no responders)"

/* Let go of the shared acknowledgement state; the last one out frees it. */
static void
nats_acks_release(NatsAcks *a)
{
	if (pg_atomic_sub_fetch_u32(&a->refs, 1) == 0)
	{
		close(a->evfd);
		free(a);
	}
}

/*
 * nats_on_ack
 *		libnats' delivery thread: an answer on <inbox>.<seq>.  Runs outside
 *		PostgreSQL (no palloc, no ereport, no latch): it only records the
 *		answer in its slot and, when the worker asked for it, writes the
 *		eventfd the worker waits on.
 */
static void
nats_on_ack(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	NatsAcks *a = closure;
	const char *subj = natsMsg_GetSubject(m);
	const char *data = natsMsg_GetData(m);
	int len = natsMsg_GetDataLength(m);
	const char *dot = subj != NULL ? strrchr(subj, '.') : NULL;
	uint64 seq, n, w;
	uint32 expected = NATS_SLOT_PENDING;
	NatsAckSlot *slot;
	bool ok;

	if (dot == NULL)
		goto done;
	seq = strtoull(dot + 1, NULL, 10);
	slot = &a->slots[seq & a->mask];
	ok = data != NULL && len > 0 && memmem(data, len, "\"error\"", 7) == NULL;
	if (pg_atomic_read_u64(&slot->seq) != seq ||
		!pg_atomic_compare_exchange_u32(&slot->state, &expected,
										ok ? NATS_SLOT_ACKED : NATS_SLOT_REFUSED))
		goto done; /* not in flight (any more) */
	if (!ok)
	{
		uint32 none = 0;

		if (pg_atomic_compare_exchange_u32(&a->error_state, &none, 1))
		{
			if (len > 0)
				snprintf(a->error, sizeof(a->error), "JetStream refused a message: %.*s",
						 Min(len, 150), data);
			else
				snprintf(a->error, sizeof(a->error), "%s", NATS_NO_RESPONDERS_TEXT);
			pg_write_barrier();
			pg_atomic_write_u32(&a->error_state, 2);
		}
	}
	n = pg_atomic_add_fetch_u64(&a->answered, 1);
	w = pg_atomic_read_u64(&a->wake_at);
	if (w != 0 && (n >= w || !ok) && pg_atomic_compare_exchange_u64(&a->wake_at, &w, 0))
	{
		uint64 one = 1;

		if (write(a->evfd, &one, sizeof(one)) < 0)
			(void) 0; /* the worker's wait times out instead */
	}
done:
	natsMsg_Destroy(m);
}

/* libnats' delivery thread is done with the subscription: let go of it. */
static void
nats_on_sub_complete(void *closure)
{
	nats_acks_release((NatsAcks *) closure);
}

static void
nats_lost(NatsSink *n, const char *fmt, const char *detail)
{
	if (n->lost)
		return;
	n->lost = true;
	snprintf(n->error, sizeof(n->error), fmt, n->url, detail);
	n->sink->failed = true;
	cdc_sink_note_error(n->sink, true, "%s", n->error);
	ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
					  errmsg("bv_cdc sink \"%s\": %s", n->sink->name, n->error),
					  errhint("The worker reconnects with back-off and replays unacknowledged "
							  "changes from the slot.")));
}

static inline uint64
nats_inflight(const NatsSink *n)
{
	return n->next_seq - n->tail;
}

/*
 * nats_take_answers
 *		Count the answers that arrived, in publish order, up to the first
 *		message still waiting.  A refusal fails the sink and stops there:
 *		nothing after it counts as delivered, the stream restarts from the
 *		slot, and the server de-duplicates what it had already stored.
 */
static void
nats_take_answers(NatsSink *n)
{
	NatsAcks *a = n->shared;

	while (n->tail < n->next_seq)
	{
		NatsAckSlot *slot = &a->slots[n->tail & n->mask];
		uint32 state = pg_atomic_read_u32(&slot->state);
		NatsInflight *e = &n->ring[n->tail & n->mask];

		if (state == NATS_SLOT_PENDING)
			break;
		if (state != NATS_SLOT_ACKED)
		{
			if (!n->sink->failed)
			{
				bool have_text = pg_atomic_read_u32(&a->error_state) == 2;

				pg_read_barrier();
				n->sink->failed = true;
				cdc_sink_note_error(n->sink, false, "%s",
									have_text ? a->error : "JetStream refused a message");
			}
			return;
		}
		pg_atomic_write_u32(&slot->state, NATS_SLOT_FREE);
		cdc_sink_acked(n->sink, e->opaque, e->len);
		n->tail++;
	}
}

/*
 * nats_wait_answers
 *		Wait up to timeout_ms until `answered` reaches target (or a refusal
 *		comes), on wes: the eventfd the callback writes, postmaster death
 *		and (n->wes) the latch.  True when the latch was set (not reset
 *		here).
 */
static bool
nats_wait_answers(NatsSink *n, WaitEventSet *wes, uint64 target, int timeout_ms)
{
	NatsAcks *a = n->shared;
	WaitEvent ev;
	uint64 buf;

	pg_atomic_write_u64(&a->wake_at, target);
	/* An answer that came before wake_at was set would wake nobody. */
	if (pg_atomic_read_u64(&a->answered) >= target || pg_atomic_read_u32(&a->error_state) != 0)
	{
		pg_atomic_write_u64(&a->wake_at, 0);
		return false;
	}
	if (WaitEventSetWait(wes, timeout_ms, &ev, 1, PG_WAIT_EXTENSION) == 1 &&
		(ev.events & WL_LATCH_SET))
	{
		pg_atomic_write_u64(&a->wake_at, 0);
		return true;
	}
	pg_atomic_write_u64(&a->wake_at, 0);
	while (read(a->evfd, &buf, sizeof(buf)) > 0)
		;
	return false;
}

/*
 * nats_service
 *		Take the answers that arrived, waiting up to timeout_ms for the next
 *		one while something is in flight; notice a lost connection.
 */
static void
nats_service(NatsSink *n, int timeout_ms)
{
	if (n->lost)
		return;
	if (natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED)
	{
		nats_lost(n, "lost the connection to NATS server %s: %s", "connection closed");
		return;
	}
	if (n->shared == NULL)
		return;
	nats_take_answers(n);
	if (timeout_ms > 0 && nats_inflight(n) > 0 && !n->sink->failed)
	{
		/* Without the latch: poll's callers wait like the old NextMsg(timeout). */
		(void) nats_wait_answers(n, n->wes_poll, pg_atomic_read_u64(&n->shared->answered) + 1,
								 timeout_ms);
		nats_take_answers(n);
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
 * nats_acks_create
 *		The state the acknowledgement callback shares with the worker, and
 *		the wait set on its eventfd.
 */
static bool
nats_acks_create(NatsSink *n, char *errbuf, size_t errlen)
{
	NatsAcks *a;
	uint64 i;

	a = calloc(1, offsetof(NatsAcks, slots) + sizeof(NatsAckSlot) * (n->mask + 1));
	if (a == NULL)
	{
		snprintf(errbuf, errlen, "out of memory for the acknowledgement ring of %s", n->url);
		return false;
	}
	a->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->evfd < 0)
	{
		snprintf(errbuf, errlen, "could not create an eventfd: %m");
		free(a);
		return false;
	}
	a->mask = n->mask;
	pg_atomic_init_u32(&a->refs, 1);
	pg_atomic_init_u64(&a->answered, 0);
	pg_atomic_init_u64(&a->wake_at, 0);
	pg_atomic_init_u32(&a->error_state, 0);
	for (i = 0; i <= a->mask; i++)
	{
		pg_atomic_init_u64(&a->slots[i].seq, 0);
		pg_atomic_init_u32(&a->slots[i].state, NATS_SLOT_FREE);
	}
	n->shared = a;
	n->wes = CreateWaitEventSet(n->cxt, 3);
	AddWaitEventToSet(n->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(n->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(n->wes, WL_SOCKET_READABLE, a->evfd, NULL, NULL);
	n->wes_poll = CreateWaitEventSet(n->cxt, 2);
	AddWaitEventToSet(n->wes_poll, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(n->wes_poll, WL_SOCKET_READABLE, a->evfd, NULL, NULL);
	return true;
}

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
	natsStatus s_sub;
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
	n->next_seq = n->tail = 1;
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
		if (!nats_acks_create(n, errbuf, errlen))
			goto done;
		NATS_TRY(natsInbox_Create(&inbox), "could not create an inbox");
		n->inbox = MemoryContextStrdup(cxt, (const char *) inbox);
		/* The subscription holds a reference, let go of by nats_on_sub_complete. */
		pg_atomic_write_u32(&n->shared->refs, 2);
		s_sub = natsConnection_Subscribe(&n->acks, n->nc, psprintf("%s.*", n->inbox), nats_on_ack,
										 n->shared);
		if (s_sub != NATS_OK)
			pg_atomic_write_u32(&n->shared->refs, 1);
		NATS_TRY(s_sub, "could not subscribe to acknowledgements");
		NATS_TRY(natsSubscription_SetOnCompleteCB(n->acks, nats_on_sub_complete, n->shared),
				 "could not watch the acknowledgement subscription");
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
	{
		/* Its delivery thread lets go of n->shared when it ends. */
		(void) natsSubscription_Unsubscribe(n->acks);
		natsSubscription_Destroy(n->acks);
	}
	if (n->nc != NULL)
	{
		natsConnection_Close(n->nc);
		natsConnection_Destroy(n->nc);
	}
	if (n->wes != NULL)
		FreeWaitEventSet(n->wes);
	if (n->wes_poll != NULL)
		FreeWaitEventSet(n->wes_poll);
	if (n->shared != NULL)
		nats_acks_release(n->shared);
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
	 * A full window: wait until half of it is answered, then publish a
	 * batch.  The callback writes the eventfd once, when the answers
	 * reach the mark: one wake-up of this thread per half window, not
	 * one per acknowledgement.
	 */
	if (n->shared != NULL && nats_inflight(n) >= (uint64) n->max_inflight)
	{
		bool woken = false;

		nats_service(n, 0);
		while (!n->lost && !sink->failed && nats_inflight(n) > (uint64) n->max_inflight / 2)
		{
			uint64 answered = pg_atomic_read_u64(&n->shared->answered);
			uint64 mark = n->next_seq - 1 - n->max_inflight / 2;

			if (nats_wait_answers(n, n->wes, Max(mark, answered + 1), NATS_WAIT_MS))
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
	if (s == NATS_OK && !n->core)
	{
		/* In flight before it is sent: its answer may come at once. */
		NatsAckSlot *slot = &n->shared->slots[n->next_seq & n->mask];

		n->ring[n->next_seq & n->mask].opaque = ev->opaque;
		n->ring[n->next_seq & n->mask].len = (uint32) ev->len;
		pg_atomic_write_u64(&slot->seq, n->next_seq);
		pg_write_barrier();
		pg_atomic_write_u32(&slot->state, NATS_SLOT_PENDING);
	}
	if (s == NATS_OK)
		s = natsConnection_PublishMsg(n->nc, m);
	natsMsg_free(m); /* not natsMsg_Destroy: see its declaration */
	if (keystr != NULL)
		pfree(keystr);
	if (s != NATS_OK && !n->core)
		pg_atomic_write_u32(&n->shared->slots[n->next_seq & n->mask].state, NATS_SLOT_FREE);
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
	n->next_seq++;
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
	return nats_inflight((NatsSink *) sink->impl) > 0 ? 1 : -1;
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
