/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  Webhook sinks: each change event POSTed, signed, to an HTTP endpoint
 *	  with libcurl's multi interface.
 *
 * Requests: the envelope as the body; headers BV-Signature ("t=<unix
 * seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>", one v1 per
 * configured secret during a rotation), BV-Event-Id (stable across retries
 * and replays: the receiver's idempotency key), BV-Topic, BV-Op, BV-Table,
 * BV-LSN and the writer's traceparent.  Up to max_concurrency requests run
 * at once over kept-alive connections (HTTP/2 multiplexed when an https
 * endpoint offers it), never two of the same key: a key's events are
 * delivered in commit order.  Redirects are never followed (a 3xx is a
 * permanent failure), so the signature cannot be sent to another host;
 * only http and https are allowed.
 *
 * Outcomes: 2xx acknowledges the event.  408, 429, 5xx, timeouts and
 * connection errors are retried with exponential back-off and jitter (or
 * after the receiver's Retry-After) until max_attempts or max_age_s; other
 * statuses are permanent.  An event that is not acknowledged on its first
 * attempt moves to the durable spool (spool.c) and from then on is retried
 * from there; one that is permanently refused or exhausts its retries is
 * parked in bv_cdc.dead_letter, with what the receiver said.  With the
 * route option on_dead_letter = hold, the later events of a parked key are
 * parked behind it (and replayed with it); by default they go on.
 *
 * One bad receiver never holds the others back: the slot moves past an
 * event once the receiver acknowledged it or once it is durably spooled.  A
 * circuit breaker opens after circuit_failures consecutive failures: while
 * it is open, events go straight to the spool; after circuit_cooldown_ms
 * one request probes the endpoint (half-open) and a success closes it.
 * Events queued longer than spill_after_ms (a receiver slower than the
 * stream) are spooled as well.
 *
 * Secrets are read from bv_core's store (bv.secret_get) by the worker and
 * kept only in this process's memory; they are never logged.  A missing
 * secret keeps the circuit open (events are spooled) until it appears.
 *
 * Concurrency: libcurl runs in the worker's thread (no curl threads, no
 * signals: CURLOPT_NOSIGNAL); every callback here runs inside
 * curl_multi_perform, called from poll and produce.
 *
 * Memory: items (events with their strings) are malloc'd, one block each,
 * and freed when the event is acknowledged, spooled or parked; the rest
 * lives in the sink's own memory context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <curl/curl.h>

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bv_common.h"
#include "webhook.h"

#define WH_MAX_SECRETS 4
#define WH_SCAN_LIMIT  1024 /* queued items looked at per dispatch round */

typedef enum WhCircuit
{
	CIRCUIT_CLOSED,
	CIRCUIT_OPEN,
	CIRCUIT_HALF_OPEN
} WhCircuit;

static const char *const circuit_names[] = {"closed", "open", "half-open"};

typedef struct WhConn
{
	CURL *easy;
	WhItem *item; /* NULL: free */
	struct curl_slist *headers;
	long retry_after_ms;
	char errbuf[CURL_ERROR_SIZE];
	char refused[160]; /* why open_socket refused the destination, or "" */
} WhConn;

typedef struct WhSink
{
	CdcSink *sink;
	MemoryContext cxt;
	/* configuration */
	char *url;
	char *secret_names;
	int timeout_ms, connect_timeout_ms, max_concurrency, max_attempts, max_age_s;
	int retry_base_ms, retry_max_ms, circuit_failures, circuit_cooldown_ms, spill_after_ms;
	const char *ca_file, *cert_file, *key_file;
	/* secrets, loaded by the worker */
	int nsecrets;
	uint8 *secrets[WH_MAX_SECRETS];
	size_t secret_len[WH_MAX_SECRETS];
	TimestampTz secrets_checked;
	/* HTTP */
	CURLM *multi;
	WhConn *conns;
	int nbusy;
	/* live path */
	dlist_head queue;
	int nqueued;
	HTAB *keys;
	/* spool */
	WhSpoolOps ops;
	int64 spooled;
	TimestampTz next_fetch;
	TimestampTz next_flush;
	uint64 spool_generation;
	/* breaker */
	WhCircuit circuit;
	int failures;
	TimestampTz open_until;
	bool probing;
	/* counters not yet published */
	uint64 new_dead, new_retries;
} WhSink;

static bool curl_ready = false;

/* The properties of a webhook sink: name, type, default, min, max, secret. */
static const CdcProperty known_properties[] = {
	{"url", CDC_PROP_STRING, NULL, 8, 2048, false},
	{"secret", CDC_PROP_STRING, NULL, 1, 1024, true},
	{"timeout_ms", CDC_PROP_INT, "10000", 100, 600000, false},
	{"connect_timeout_ms", CDC_PROP_INT, "5000", 100, 600000, false},
	{"max_concurrency", CDC_PROP_INT, "16", 1, 1024, false},
	{"max_attempts", CDC_PROP_INT, "300", 1, 100000, false},
	{"max_age_s", CDC_PROP_INT, "86400", 1, 30 * 86400, false},
	{"retry_base_ms", CDC_PROP_INT, "500", 1, 3600000, false},
	{"retry_max_ms", CDC_PROP_INT, "300000", 1, 86400000, false},
	{"circuit_failures", CDC_PROP_INT, "5", 1, 1000000, false},
	{"circuit_cooldown_ms", CDC_PROP_INT, "30000", 10, 86400000, false},
	{"spill_after_ms", CDC_PROP_INT, "2000", 10, 3600000, false},
	{"tls_ca_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_cert_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_key_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{NULL}};

/* ---- configuration ---- */

static void
webhook_validate(List *keys, List *values)
{
	const char *url = cdc_prop(known_properties, keys, values, "url");
	const char *secret = cdc_prop(known_properties, keys, values, "secret");
	const char *cert = cdc_prop(known_properties, keys, values, "tls_cert_file");
	const char *key = cdc_prop(known_properties, keys, values, "tls_key_file");
	const char *p;
	int n = 1;

	cdc_check_properties("webhook", keys, known_properties);
	if (url == NULL || (pg_strncasecmp(url, "http://", 7) != 0 &&
						pg_strncasecmp(url, "https://", 8) != 0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a webhook sink needs an http:// or https:// \"url\""),
						errhint("For example {\"url\": \"https://hooks.example.com/bv\", "
								"\"secret\": \"webhook:orders\"}.")));
	if (strpbrk(url, " \t\r\n") != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("webhook \"url\" must not contain white space")));
	/* SSRF policy: numeric hosts now, every address again at connect time */
	cdc_check_webhook_url(url);
	if (secret == NULL || secret[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a webhook sink needs a signing \"secret\""),
						errdetail("\"secret\" names one or more secrets of bv_core's store, "
								  "separated by commas; the first is the current one."),
						errhint("Store it first: SELECT bv.secret_set('webhook:orders', "
								"'<random value>').")));
	for (p = secret; *p; p++)
		if (*p == ',')
			n++;
	if (n > WH_MAX_SECRETS)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a webhook sink signs with at most %d secrets", WH_MAX_SECRETS)));
	if ((cert == NULL) != (key == NULL))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("\"tls_cert_file\" and \"tls_key_file\" go together"),
						errhint("A client certificate (mTLS) needs both its certificate and its "
								"private key.")));
	/* Lengths and ranges: the property table. */
	cdc_check_property_values("webhook", known_properties, keys, values);
}

/* (Re)load the signing secrets; the circuit stays open while one is missing. */
static void
load_secrets(WhSink *ws)
{
	char *names = pstrdup(ws->secret_names);
	char *name, *save = NULL;
	int i;

	for (i = 0; i < ws->nsecrets; i++)
	{
		explicit_bzero(ws->secrets[i], ws->secret_len[i]);
		pfree(ws->secrets[i]);
	}
	ws->nsecrets = 0;
	ws->secrets_checked = GetCurrentTimestamp();
	for (name = strtok_r(names, ",", &save); name; name = strtok_r(NULL, ",", &save))
	{
		MemoryContext old = MemoryContextSwitchTo(ws->cxt);
		char *value;

		while (*name == ' ')
			name++;
		value = cdc_secret_get(name);
		MemoryContextSwitchTo(old);
		if (value == NULL)
		{
			for (i = 0; i < ws->nsecrets; i++)
				explicit_bzero(ws->secrets[i], ws->secret_len[i]);
			ws->nsecrets = 0;
			cdc_sink_note_error(ws->sink, true, "signing secret \"%s\" is missing", name);
			return;
		}
		ws->secrets[ws->nsecrets] = (uint8 *) value;
		ws->secret_len[ws->nsecrets] = strlen(value);
		ws->nsecrets++;
	}
	pfree(names);
}

static bool
webhook_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	List *k = sink->conf_keys, *v = sink->conf_values;
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc webhook",
											  ALLOCSET_DEFAULT_SIZES);
	WhSink *ws = MemoryContextAllocZero(cxt, sizeof(WhSink));
	MemoryContext old = MemoryContextSwitchTo(cxt);
	HASHCTL ctl;
	int i;

	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			snprintf(errbuf, errlen, "libcurl could not be initialised");
			MemoryContextSwitchTo(old);
			MemoryContextDelete(cxt);
			return false;
		}
		curl_ready = true;
	}
	ws->sink = sink;
	ws->cxt = cxt;
	ws->url = pstrdup(cdc_property(k, v, "url", "")) /* required: validated */;
	ws->secret_names = pstrdup(cdc_property(k, v, "secret", "")) /* required: validated */;
	ws->timeout_ms = cdc_prop_int(known_properties, k, v, "timeout_ms");
	ws->connect_timeout_ms = cdc_prop_int(known_properties, k, v, "connect_timeout_ms");
	ws->max_concurrency = cdc_prop_int(known_properties, k, v, "max_concurrency");
	ws->max_attempts = cdc_prop_int(known_properties, k, v, "max_attempts");
	ws->max_age_s = cdc_prop_int(known_properties, k, v, "max_age_s");
	ws->retry_base_ms = cdc_prop_int(known_properties, k, v, "retry_base_ms");
	ws->retry_max_ms = cdc_prop_int(known_properties, k, v, "retry_max_ms");
	ws->circuit_failures = cdc_prop_int(known_properties, k, v, "circuit_failures");
	ws->circuit_cooldown_ms = cdc_prop_int(known_properties, k, v, "circuit_cooldown_ms");
	ws->spill_after_ms = cdc_prop_int(known_properties, k, v, "spill_after_ms");
	ws->ca_file = cdc_prop(known_properties, k, v, "tls_ca_file");
	ws->cert_file = cdc_prop(known_properties, k, v, "tls_cert_file");
	ws->key_file = cdc_prop(known_properties, k, v, "tls_key_file");
	ws->ca_file = ws->ca_file ? pstrdup(ws->ca_file) : NULL;
	ws->cert_file = ws->cert_file ? pstrdup(ws->cert_file) : NULL;
	ws->key_file = ws->key_file ? pstrdup(ws->key_file) : NULL;
	dlist_init(&ws->queue);
	dlist_init(&ws->ops.to_spool);
	dlist_init(&ws->ops.to_update);
	dlist_init(&ws->ops.to_delete);
	dlist_init(&ws->ops.to_dead);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(WhKey);
	ctl.hcxt = cxt;
	ws->keys = hash_create("bv_cdc webhook keys", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	ws->multi = curl_multi_init();
	ws->conns = palloc0(sizeof(WhConn) * ws->max_concurrency);
	for (i = 0; i < ws->max_concurrency; i++)
		ws->conns[i].easy = curl_easy_init();
	if (ws->multi == NULL || ws->conns[ws->max_concurrency - 1].easy == NULL)
	{
		snprintf(errbuf, errlen, "libcurl could not create its handles");
		MemoryContextSwitchTo(old);
		sink->impl = ws;
		sink->ops->stop(sink);
		return false;
	}
	curl_multi_setopt(ws->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(ws->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) ws->max_concurrency);
	curl_multi_setopt(ws->multi, CURLMOPT_MAXCONNECTS, (long) ws->max_concurrency);
	MemoryContextSwitchTo(old);

	sink->impl = ws;
	ws->spool_generation = pg_atomic_read_u64(&cdc_shared->spool_generation);
	if (!wh_spool_load_keys(sink->name, ws->keys, &ws->spooled))
	{
		snprintf(errbuf, errlen, "could not read the webhook spool (is bv_cdc up to date?)");
		sink->ops->stop(sink);
		return false;
	}
	load_secrets(ws);
	if (ws->nsecrets == 0)
	{
		ws->circuit = CIRCUIT_OPEN;
		ws->open_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
	}
	ws->next_fetch = GetCurrentTimestamp();
	return true;
}

/* ---- items and keys ---- */

static WhKey *
key_of(WhSink *ws, uint64 hash)
{
	bool found;
	WhKey *k = hash_search(ws->keys, &hash, HASH_ENTER, &found);

	if (!found)
	{
		k->live = k->busy = k->spooled = 0;
		k->held = false;
		k->next_attempt = 0;
	}
	return k;
}

/* Forget a key with nothing left (keeps the table small). */
static void
key_release(WhSink *ws, WhKey *k)
{
	if (k->live == 0 && k->busy == 0 && k->spooled <= 0 && !k->held)
		hash_search(ws->keys, &k->hash, HASH_REMOVE, NULL);
}

static void
ops_push(WhSink *ws, dlist_head *list, WhItem *it)
{
	dlist_push_tail(list, &it->node);
	ws->ops.n++;
}

/* Send an item to the spool behind its key's earlier rows. */
static void
to_spool(WhSink *ws, WhItem *it, TimestampTz not_before)
{
	WhKey *k = key_of(ws, it->keyhash);
	TimestampTz now = GetCurrentTimestamp();

	it->next_attempt = Max(Max(now, not_before), k->next_attempt);
	k->next_attempt = it->next_attempt;
	if (it->spool_id > 0)
		ops_push(ws, &ws->ops.to_update, it);
	else
	{
		k->spooled++;
		ws->spooled++;
		ops_push(ws, &ws->ops.to_spool, it);
	}
}

/* Park an item in the dead letters. */
static void
to_dead(WhSink *ws, WhItem *it, const char *reason)
{
	WhKey *k = key_of(ws, it->keyhash);

	it->dead_reason = reason;
	ws->new_dead++;
	if (it->hold && !k->held)
	{
		/* The key's rows already in the spool follow it to the dead letters. */
		k->held = true;
		it->move_key_rows = k->spooled > 0;
	}
	ops_push(ws, &ws->ops.to_dead, it);
}

/* Move the queued (not in flight) items of a key, or of every idle key, to the spool. */
static void
spill_queue(WhSink *ws, const uint64 *only_key, TimestampTz not_before)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &ws->queue)
	{
		WhItem *w = wh_item_of(it.cur);
		WhKey *k;

		if (only_key != NULL && w->keyhash != *only_key)
			continue;
		k = key_of(ws, w->keyhash);
		if (only_key == NULL && k->busy > 0)
			continue; /* spilled when its request ends, behind it */
		dlist_delete(&w->node);
		ws->nqueued--;
		k->live--;
		if (k->held && w->hold)
			to_dead(ws, w, WH_DEAD_HELD);
		else
			to_spool(ws, w, not_before);
	}
}

/* ---- requests ---- */

static size_t
on_header(char *buf, size_t size, size_t n, void *arg)
{
	WhConn *c = arg;
	size_t len = size * n;

	if (len > 12 && pg_strncasecmp(buf, "Retry-After:", 12) == 0)
	{
		char value[64];
		size_t vlen = Min(len - 12, sizeof(value) - 1);
		char *p = value, *end;
		long secs;

		memcpy(value, buf + 12, vlen);
		value[vlen] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		secs = strtol(p, &end, 10);
		if (end != p && secs >= 0)
			c->retry_after_ms = secs * 1000;
		else
		{
			time_t when = curl_getdate(p, NULL);

			if (when > 0)
				c->retry_after_ms = Max(0, (long) (when - time(NULL)) * 1000);
		}
	}
	return len;
}

static size_t
discard_body(char *buf, size_t size, size_t n, void *arg)
{
	return size * n;
}

/* The BV-Signature header for a body, signed now with every secret. */
static struct curl_slist *
add_signature(WhSink *ws, struct curl_slist *h, const WhItem *it)
{
	char tbuf[32];
	size_t tlen = snprintf(tbuf, sizeof(tbuf), "%ld.", (long) time(NULL));
	StringInfoData hdr;
	uint8 *msg = malloc(tlen + it->len);
	int i;

	if (msg == NULL)
		return NULL;
	memcpy(msg, tbuf, tlen);
	memcpy(msg + tlen, it->body, it->len);
	initStringInfo(&hdr);
	appendStringInfo(&hdr, "BV-Signature: t=%.*s", (int) tlen - 1, tbuf);
	for (i = 0; i < ws->nsecrets; i++)
	{
		uint8 mac[BV_SHA256_LEN];
		int j;

		if (!bv_hmac_sha256(ws->secrets[i], ws->secret_len[i], msg, tlen + it->len, mac))
			continue;
		appendStringInfoString(&hdr, ",v1=");
		for (j = 0; j < BV_SHA256_LEN; j++)
			appendStringInfo(&hdr, "%02x", mac[j]);
	}
	free(msg);
	h = curl_slist_append(h, hdr.data);
	pfree(hdr.data);
	return h;
}

static struct curl_slist *
add_header(struct curl_slist *h, const char *name, const char *value)
{
	char buf[512];

	if (h == NULL || value == NULL)
		return h;
	snprintf(buf, sizeof(buf), "%s: %s", name, value);
	return curl_slist_append(h, buf);
}

/*
 * libcurl's open-socket callback: every address a request is about to
 * connect to passes the destination policy (destination.c), whatever name
 * resolved to it.  A refused address fails the connection attempt (libcurl
 * tries the name's other addresses), and its reason becomes the error.
 */
static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	WhConn *c = (WhConn *) clientp;

	if (!cdc_destination_allowed(&address->addr, c->refused, sizeof(c->refused)))
		return CURL_SOCKET_BAD;
	c->refused[0] = '\0';
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * libcurl's pre-request callback: the connection a request is about to use,
 * new or kept alive, goes to an allowed address (the setting may have
 * changed since it was opened).
 */
static int
check_connection(void *clientp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	WhConn *c = (WhConn *) clientp;

	if (!cdc_destination_text_allowed(primary_ip, c->refused, sizeof(c->refused)))
		return CURL_PREREQFUNC_ABORT;
	return CURL_PREREQFUNC_OK;
}

static bool
start_request(WhSink *ws, WhConn *c, WhItem *it)
{
	CURL *e = c->easy;
	struct curl_slist *h = NULL;

	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	h = add_header(h, "User-Agent", "bv_cdc/" BV_CDC_VERSION);
	h = add_header(h, "BV-Event-Id", it->event_id);
	h = add_header(h, "BV-Topic", it->topic);
	h = add_header(h, "BV-Op", it->op);
	h = add_header(h, "BV-Table", it->table);
	h = add_header(h, "BV-LSN", it->lsn);
	if (it->traceparent)
		h = add_header(h, "traceparent", it->traceparent);
	h = h ? add_signature(ws, h, it) : NULL;
	if (h == NULL)
		return false;

	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, ws->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) ws->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) ws->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, it->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) it->len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, c);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, check_connection);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, c);
	if (ws->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, ws->ca_file);
	if (ws->cert_file)
	{
		curl_easy_setopt(e, CURLOPT_SSLCERT, ws->cert_file);
		curl_easy_setopt(e, CURLOPT_SSLKEY, ws->key_file);
	}
	c->errbuf[0] = '\0';
	c->refused[0] = '\0';
	c->retry_after_ms = -1;
	c->headers = h;
	c->item = it;
	if (curl_multi_add_handle(ws->multi, e) != CURLM_OK)
	{
		curl_slist_free_all(h);
		c->headers = NULL;
		c->item = NULL;
		return false;
	}
	if (it->first_attempt == 0)
		it->first_attempt = GetCurrentTimestamp();
	key_of(ws, it->keyhash)->busy++;
	ws->nbusy++;
	if (ws->circuit == CIRCUIT_HALF_OPEN)
		ws->probing = true;
	return true;
}

static WhConn *
free_conn(WhSink *ws)
{
	int i;

	if (ws->nbusy >= ws->max_concurrency)
		return NULL;
	for (i = 0; i < ws->max_concurrency; i++)
		if (ws->conns[i].item == NULL)
			return &ws->conns[i];
	return NULL;
}

/* Back-off before attempt n+1 (n attempts made): exponential, half jitter. */
static long
retry_delay_ms(WhSink *ws, int attempts, long retry_after_ms)
{
	double d = (double) ws->retry_base_ms * pow(2.0, Min(attempts - 1, 30));
	long ceiling = (long) Min(d, (double) ws->retry_max_ms);

	if (retry_after_ms >= 0)
		return Min(retry_after_ms, (long) ws->max_age_s * 1000L);
	return ceiling / 2 + (long) pg_prng_uint64_range(&pg_global_prng_state, 0, ceiling - ceiling / 2);
}

static void
circuit_failure(WhSink *ws)
{
	TimestampTz now = GetCurrentTimestamp();

	ws->failures++;
	if (ws->circuit == CIRCUIT_HALF_OPEN ||
		(ws->circuit == CIRCUIT_CLOSED && ws->failures >= ws->circuit_failures))
	{
		if (ws->circuit == CIRCUIT_CLOSED)
			ereport(LOG, (errmsg("bv_cdc webhook sink \"%s\": circuit opened after %d failures",
								 ws->sink->name, ws->failures),
						  errdetail("Events are spooled until a probe succeeds in %d ms.",
									ws->circuit_cooldown_ms)));
		ws->circuit = CIRCUIT_OPEN;
		ws->open_until = TimestampTzPlusMilliseconds(now, ws->circuit_cooldown_ms);
		ws->sink->down = true;
		spill_queue(ws, NULL, ws->open_until);
	}
	ws->probing = false;
}

static void
circuit_success(WhSink *ws)
{
	if (ws->circuit != CIRCUIT_CLOSED)
		ereport(LOG, (errmsg("bv_cdc webhook sink \"%s\": circuit closed", ws->sink->name)));
	ws->failures = 0;
	ws->circuit = CIRCUIT_CLOSED;
	ws->probing = false;
	ws->sink->down = false;
}

/* A request ended: acknowledge, retry through the spool, or park. */
static void
complete(WhSink *ws, WhConn *c, CURLcode res)
{
	WhItem *it = c->item;
	WhKey *k = key_of(ws, it->keyhash);
	long status = 0;
	bool ok, retry;
	TimestampTz now = GetCurrentTimestamp();

	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(ws->multi, c->easy);
	curl_slist_free_all(c->headers);
	c->headers = NULL;
	c->item = NULL;
	ws->nbusy--;
	k->busy--;
	it->attempts++;
	it->status = res == CURLE_OK ? (int) status : 0;
	ok = res == CURLE_OK && status >= 200 && status < 300;
	retry = res != CURLE_OK || status == 408 || status == 429 || status >= 500;
	if (ok)
		it->error[0] = '\0';
	else if (res != CURLE_OK)
		snprintf(it->error, sizeof(it->error), "%s",
				 c->refused[0] ? c->refused : c->errbuf[0] ? c->errbuf
														   : curl_easy_strerror(res));
	else if (status >= 300 && status < 400)
		snprintf(it->error, sizeof(it->error), "HTTP %ld: redirects are not followed", status);
	else
		snprintf(it->error, sizeof(it->error), "HTTP %ld", status);

	if (it->spool_id > 0)
		ws->new_retries++;
	if (ok)
	{
		circuit_success(ws);
		if (it->opaque != 0)
		{
			k->live--;
			cdc_sink_acked(ws->sink, it->opaque, it->len);
			key_release(ws, k);
			free(it);
		}
		else
		{
			ws->sink->n_acked++;
			ws->sink->n_bytes += it->len;
			ops_push(ws, &ws->ops.to_delete, it);
		}
		return;
	}

	if (it->opaque != 0)
		k->live--;
	cdc_sink_note_error(ws->sink, false, "%s", it->error);

	/*
	 * The event first, then the key's later queued events behind it, and
	 * only then the breaker (which may spill the whole queue): a key's
	 * events reach the spool in their order.
	 */
	if (!retry)
		to_dead(ws, it, WH_DEAD_PERMANENT);
	else if (it->attempts >= ws->max_attempts ||
			 TimestampDifferenceExceeds(it->first_attempt, now, ws->max_age_s * 1000))
		to_dead(ws, it, WH_DEAD_EXHAUSTED);
	else
		to_spool(ws, it,
				 TimestampTzPlusMilliseconds(now,
											 retry_delay_ms(ws, it->attempts, c->retry_after_ms)));
	spill_queue(ws, &it->keyhash, 0);
	if (retry)
		circuit_failure(ws);
	else
		ws->failures = 0; /* the endpoint answered: it is up */
}

static void
serve(WhSink *ws)
{
	int running, left;
	CURLMsg *m;

	curl_multi_perform(ws->multi, &running);
	while ((m = curl_multi_info_read(ws->multi, &left)) != NULL)
	{
		WhConn *c = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &c);
		if (c != NULL && c->item != NULL)
			complete(ws, c, m->data.result);
	}
}

/* ---- the spool round ---- */

static void
finish_flush(WhSink *ws)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &ws->ops.to_spool)
	{
		WhItem *w = wh_item_of(it.cur);

		dlist_delete(&w->node);
		if (w->opaque != 0)
			cdc_sink_spooled(ws->sink, w->opaque);
		free(w);
	}
	dlist_foreach_modify(it, &ws->ops.to_update)
	{
		WhItem *w = wh_item_of(it.cur);

		dlist_delete(&w->node);
		free(w);
	}
	dlist_foreach_modify(it, &ws->ops.to_delete)
	{
		WhItem *w = wh_item_of(it.cur);
		WhKey *k = key_of(ws, w->keyhash);

		dlist_delete(&w->node);
		k->spooled--;
		ws->spooled--;
		key_release(ws, k);
		free(w);
	}
	dlist_foreach_modify(it, &ws->ops.to_dead)
	{
		WhItem *w = wh_item_of(it.cur);
		WhKey *k = key_of(ws, w->keyhash);

		dlist_delete(&w->node);
		if (w->opaque != 0)
			cdc_sink_spooled(ws->sink, w->opaque);
		if (w->move_key_rows)
		{
			ws->spooled -= Max(k->spooled, 0);
			k->spooled = 0;
		}
		else if (w->spool_id > 0 && k->spooled > 0)
		{
			k->spooled--;
			ws->spooled--;
		}
		key_release(ws, k);
		free(w);
	}
	ws->ops.n = 0;
}

static void
flush(WhSink *ws)
{
	char errbuf[256];
	TimestampTz now;

	if (ws->ops.n == 0)
		return;
	now = GetCurrentTimestamp();
	if (now < ws->next_flush)
		return;
	if (wh_spool_flush(ws->sink->name, &ws->ops, errbuf, sizeof(errbuf)))
		finish_flush(ws);
	else
	{
		cdc_sink_note_error(ws->sink, false, "%s", errbuf);
		ereport(WARNING, (errmsg("bv_cdc webhook sink \"%s\" could not write its spool: %s",
								 ws->sink->name, errbuf),
						  errhint("The events stay unacknowledged; the worker tries again.")));
		ws->next_flush = TimestampTzPlusMilliseconds(now, 1000);
	}
}

/* Start requests: queued events first, then due rows of the spool. */
static void
dispatch(WhSink *ws)
{
	dlist_mutable_iter it;
	WhConn *c;
	int scanned = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (ws->circuit == CIRCUIT_OPEN || (ws->circuit == CIRCUIT_HALF_OPEN && ws->probing))
		return;

	dlist_foreach_modify(it, &ws->queue)
	{
		WhItem *w = wh_item_of(it.cur);

		if ((c = free_conn(ws)) == NULL || scanned++ >= WH_SCAN_LIMIT)
			break;
		if (key_of(ws, w->keyhash)->busy > 0)
			continue; /* one request per key at a time */
		dlist_delete(&w->node);
		ws->nqueued--;
		if (!start_request(ws, c, w))
		{
			dlist_push_head(&ws->queue, &w->node);
			ws->nqueued++;
			break;
		}
		if (ws->circuit == CIRCUIT_HALF_OPEN)
			return;
	}

	if (ws->spooled > 0 && ws->ops.n == 0 && now >= ws->next_fetch && free_conn(ws) != NULL)
	{
		dlist_head rows;
		TimestampTz next_due;
		int nfree = ws->max_concurrency - ws->nbusy;
		int n, started = 0;

		dlist_init(&rows);
		n = wh_spool_fetch(ws->sink->name, nfree * 4, &rows, &next_due);
		dlist_foreach_modify(it, &rows)
		{
			WhItem *w = wh_item_of(it.cur);
			WhKey *k = key_of(ws, w->keyhash);

			dlist_delete(&w->node);
			if (k->busy > 0 || k->live > 0 || (k->held && w->hold) ||
				(ws->circuit == CIRCUIT_HALF_OPEN && ws->probing) ||
				(c = free_conn(ws)) == NULL || !start_request(ws, c, w))
			{
				free(w);
				continue;
			}
			started++;
		}
		if (n < 0)
			ws->next_fetch = TimestampTzPlusMilliseconds(now, 1000);
		else if (started > 0)
			ws->next_fetch = now;
		else if (n > 0)
			ws->next_fetch = TimestampTzPlusMilliseconds(now, 50);
		else
			ws->next_fetch = next_due > 0 ? Min(next_due, TimestampTzPlusMilliseconds(now, 1000))
										  : TimestampTzPlusMilliseconds(now, 1000);
	}
}

/* Everything that is due: breaker, secrets, replays, spills, spool, requests. */
static void
round_trip(WhSink *ws)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64 gen = pg_atomic_read_u64(&cdc_shared->spool_generation);

	if (gen != ws->spool_generation && ws->ops.n == 0)
	{
		/* Dead letters were replayed: count the spool's keys again. */
		HASH_SEQ_STATUS st;
		WhKey *k;

		ws->spool_generation = gen;
		hash_seq_init(&st, ws->keys);
		while ((k = hash_seq_search(&st)) != NULL)
		{
			k->spooled = 0;
			k->held = false;
		}
		(void) wh_spool_load_keys(ws->sink->name, ws->keys, &ws->spooled);
		ws->next_fetch = now;
	}
	if (ws->nsecrets == 0 || TimestampDifferenceExceeds(ws->secrets_checked, now, 10000))
	{
		if (TimestampDifferenceExceeds(ws->secrets_checked, now, 10000))
			load_secrets(ws);
	}
	if (ws->circuit == CIRCUIT_OPEN && now >= ws->open_until)
	{
		if (ws->nsecrets == 0)
			ws->open_until = TimestampTzPlusMilliseconds(now, 10000);
		else
		{
			ws->circuit = CIRCUIT_HALF_OPEN;
			ws->probing = false;
			ws->next_fetch = now;
		}
	}
	serve(ws);
	if (ws->nqueued > 0)
	{
		WhItem *head = wh_item_of(dlist_head_node(&ws->queue));

		if (ws->circuit == CIRCUIT_OPEN ||
			TimestampDifferenceExceeds(head->queued_at, now, ws->spill_after_ms))
			spill_queue(ws, NULL, ws->circuit == CIRCUIT_OPEN ? ws->open_until : 0);
	}
	flush(ws);
	dispatch(ws);
	serve(ws);
}

/* ---- the sink operations ---- */

static CdcProduceResult
webhook_produce(CdcSink *sink, const CdcEvent *ev, char **err)
{
	WhSink *ws = sink->impl;
	StringInfoData keystr;
	WhItem *it;
	WhKey *k;

	initStringInfo(&keystr);
	appendStringInfo(&keystr, "%s:", ev->h->table);
	if (ev->key)
		appendBinaryStringInfo(&keystr, ev->key, (int) ev->keylen);
	it = wh_item_new(ev, keystr.data);
	pfree(keystr.data);
	if (it == NULL)
	{
		*err = pstrdup("out of memory");
		return CDC_PRODUCE_RESTART;
	}
	k = key_of(ws, it->keyhash);
	/*
	 * Behind the key's earlier events, wherever they are: parked (hold), in
	 * the spool, or in memory (queued or in flight; if those fail, this one
	 * follows them to the spool).  Otherwise, while the circuit is not
	 * closed, straight to the spool.
	 */
	if (k->held && it->hold)
		to_dead(ws, it, WH_DEAD_HELD);
	else if (k->spooled > 0 || (k->live == 0 && ws->circuit != CIRCUIT_CLOSED))
		to_spool(ws, it, ws->circuit == CIRCUIT_OPEN ? ws->open_until : 0);
	else
	{
		dlist_push_tail(&ws->queue, &it->node);
		ws->nqueued++;
		k->live++;
		dispatch(ws);
		serve(ws);
	}
	return CDC_PRODUCE_OK;
}

static void
webhook_poll(CdcSink *sink, int timeout_ms)
{
	WhSink *ws = sink->impl;

	round_trip(ws);
	if (timeout_ms > 0 && ws->nbusy > 0)
	{
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		curl_multi_poll(ws->multi, NULL, 0, timeout_ms, NULL);
		pgstat_report_wait_end();
		round_trip(ws);
	}
}

static int
webhook_wait_ms(CdcSink *sink)
{
	WhSink *ws = sink->impl;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = 0;

	if (ws->nbusy > 0 || ws->nqueued > 0 || ws->ops.n > 0)
		return 1;
	if (ws->spooled > 0)
		next = ws->next_fetch;
	if (ws->circuit == CIRCUIT_OPEN)
		next = next ? Min(next, ws->open_until) : ws->open_until;
	if (next == 0)
		return -1;
	if (next <= now)
		return 1;
	return (int) Min((next - now) / 1000 + 1, 1000);
}

static void
free_list(dlist_head *list)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, list)
	{
		WhItem *w = wh_item_of(it.cur);

		dlist_delete(&w->node);
		free(w);
	}
}

/*
 * Drop everything not yet durable: queued and in-flight events of the
 * stream are replayed from the slot; spool rows stay in the spool.
 */
static void
webhook_stop(CdcSink *sink)
{
	WhSink *ws = sink->impl;
	int i;

	if (ws == NULL)
		return;
	for (i = 0; ws->conns && i < ws->max_concurrency; i++)
	{
		WhConn *c = &ws->conns[i];

		if (c->item != NULL)
		{
			curl_multi_remove_handle(ws->multi, c->easy);
			curl_slist_free_all(c->headers);
			free(c->item);
			c->item = NULL;
		}
		if (c->easy)
			curl_easy_cleanup(c->easy);
	}
	if (ws->multi)
		curl_multi_cleanup(ws->multi);
	free_list(&ws->queue);
	free_list(&ws->ops.to_spool);
	free_list(&ws->ops.to_update);
	free_list(&ws->ops.to_delete);
	free_list(&ws->ops.to_dead);
	for (i = 0; i < ws->nsecrets; i++)
		explicit_bzero(ws->secrets[i], ws->secret_len[i]);
	sink->impl = NULL;
	sink->pending = 0;
	MemoryContextDelete(ws->cxt);
}

static void
webhook_rebind(CdcSink *sink)
{
	((WhSink *) sink->impl)->sink = sink;
}

/* Called under cdc_shared->mutex: copy only. */
static void
webhook_publish_stats(CdcSink *sink, CdcSinkStats *st)
{
	WhSink *ws = sink->impl;

	strlcpy(st->circuit, circuit_names[ws->circuit], sizeof(st->circuit));
	st->spooled = ws->spooled;
	st->dead_letters += ws->new_dead;
	st->spool_retries += ws->new_retries;
	ws->new_dead = ws->new_retries = 0;
}

const CdcSinkOps cdc_webhook_ops = {
	.kind = "webhook",
	.properties = known_properties,
	.topic_style = CDC_TOPIC_NAME,
	.event_ids = true,
	.publish_stats = webhook_publish_stats,
	.validate = webhook_validate,
	.start = webhook_start,
	.stop = webhook_stop,
	.produce = webhook_produce,
	.poll = webhook_poll,
	.wait_ms = webhook_wait_ms,
	.rebind = webhook_rebind,
};
