/*-------------------------------------------------------------------------
 *
 * mqtt.c
 *	  MQTT sinks: a libmosquitto client per sink, driven from the worker's
 *	  own thread, and its acknowledgements.
 *
 * Each sink gets one client (clean session, MQTT 3.1.1 or 5) connected to
 * one broker.  A change handed to produce() is published with its route's
 * QoS and retain flag; it counts as delivered for the slot (cdc_sink_acked)
 * only when libmosquitto reports it published: on PUBACK for QoS 1, on
 * PUBCOMP for QoS 2, once written to the socket for QoS 0.  An MQTT 5
 * acknowledgement with a failure reason code (0x80 and up) is not a
 * delivery.  MQTT 3.1.1 brokers cannot refuse a message in their
 * acknowledgement (mosquitto acknowledges and drops a publish its ACL
 * refuses), so only MQTT 5 makes such a refusal visible.
 *
 * Failures are never repaired here.  When the connection is refused or
 * lost, the sink forgets what was in flight and marks itself failed; the
 * stream restarts from the slot and the worker reconnects with back-off and
 * jitter (worker.c), so nothing is lost and a consumer may see a change
 * twice.  The in-flight messages are deliberately not passed to
 * cdc_sink_delivery_failed(): stopping the sink ends them (sink.c), and the
 * window entries they leave unacknowledged keep the slot from moving past
 * them in the meantime.  A message that can never be published (too large,
 * an invalid topic, a QoS the broker does not offer) is refused by produce()
 * and quarantined.
 *
 * Concurrency: no libmosquitto thread (mosquitto_loop_start is not used).
 * start() connects without blocking and waits for the CONNACK itself;
 * poll() and produce() drive the client with mosquitto_loop_read/write/misc
 * and poll(2) on its socket.  Every callback (on_connect, on_disconnect,
 * on_publish, on_log) therefore runs inside those calls, in the worker's
 * main thread: callbacks update the sink's counters and state but call
 * nothing that can throw; warnings are logged after libmosquitto returns.
 * Host names are resolved by getaddrinfo() in mosquitto_connect_async(),
 * which blocks for as long as the resolver does.
 *
 * Memory: libmosquitto copies each payload into its own malloc'd buffer and
 * frees it on acknowledgement.  The in-flight table (message id -> window
 * opaque and length) is an open-addressing hash of at least twice
 * max_inflight slots, allocated once; produce() waits while max_inflight
 * messages are unacknowledged, so neither grows per message.  The sink's
 * state lives in its own memory context under TopMemoryContext, because a
 * running sink outlives the configuration context it was started from
 * (worker.c adopts it into the next configuration, then calls rebind).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <poll.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kinds.h"

/* produce() and start() wait in slices, serving interrupts in between. */
#define MQTT_WAIT_SLICE_MS 50

/* Reads per service pass while the socket stays readable. */
#define MQTT_READ_ROUNDS 64

/* One unacknowledged message: its packet identifier and window entry. */
typedef struct MqttInflight
{
	uint64 opaque;
	uint32 len;
	uint16 mid;
	bool used;
} MqttInflight;

typedef struct MqttSink
{
	MemoryContext cxt;
	CdcSink *sink; /* back-pointer, moved by rebind */
	struct mosquitto *mosq;
	char *host;
	int port;
	int protocol; /* MQTT_PROTOCOL_V311 or MQTT_PROTOCOL_V5 */
	int max_inflight;

	bool connected; /* CONNACK accepted and not lost since */
	bool lost;      /* refused or lost: "error" says why */
	bool stopping;  /* stop(): callbacks change nothing */
	char error[BV_CDC_ERRLEN];
	char last_log[BV_CDC_ERRLEN]; /* libmosquitto's last error line */
	char warning[BV_CDC_ERRLEN];  /* to log once libmosquitto returns */

	/* The message mosquitto_publish() is sending: QoS 0 may complete inside. */
	bool publishing;
	bool pub_acked;
	int pub_mid;
	uint64 pub_opaque;
	uint32 pub_len;

	/* In flight, by packet identifier: linear probing, backward-shift delete. */
	int ninflight;
	uint32 mask;
	MqttInflight *slots;
} MqttSink;

static bool mqtt_lib_ready = false;

static void mqtt_stop(CdcSink *sink);

/* The properties of an MQTT sink: name, type, default, min, max, secret. */
static const CdcProperty mqtt_properties[] = {
	{"host", CDC_PROP_STRING, NULL, 1, 255, false},
	{"port", CDC_PROP_INT, "1883", 1, 65535, false},
	{"client_id", CDC_PROP_STRING, "bv_cdc_<sink>", 1, 1024, false},
	{"username", CDC_PROP_STRING, NULL, 1, 1024, false},
	{"password_secret", CDC_PROP_STRING, NULL, 1, 200, true},
	{"tls_ca_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_cert_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"tls_key_file", CDC_PROP_FILE, NULL, 1, 4096, false},
	{"keepalive_s", CDC_PROP_INT, "30", 5, 3600, false},
	{"max_inflight", CDC_PROP_INT, "1000", 1, 65535, false},
	{"connect_timeout_ms", CDC_PROP_INT, "5000", 100, 600000, false},
	{"protocol", CDC_PROP_STRING, "3.1.1", 1, 8, false},
	{NULL}};

/* ---- the in-flight table ---- */

static bool
inflight_add(MqttSink *m, int mid, uint64 opaque, uint32 len)
{
	uint32 i = (uint32) mid & m->mask;

	while (m->slots[i].used)
	{
		if (m->slots[i].mid == (uint16) mid)
			return false;
		i = (i + 1) & m->mask;
	}
	m->slots[i].used = true;
	m->slots[i].mid = (uint16) mid;
	m->slots[i].opaque = opaque;
	m->slots[i].len = len;
	m->ninflight++;
	return true;
}

/* Remove message mid; false when it is not ours (or no longer). */
static bool
inflight_take(MqttSink *m, int mid, uint64 *opaque, uint32 *len)
{
	uint32 i = (uint32) mid & m->mask;
	uint32 j;

	while (m->slots[i].used && m->slots[i].mid != (uint16) mid)
		i = (i + 1) & m->mask;
	if (!m->slots[i].used)
		return false;
	*opaque = m->slots[i].opaque;
	*len = m->slots[i].len;

	/*
	 * Close the hole: move back each later entry of the run whose home slot
	 * is not between the hole and itself, so that every entry stays
	 * reachable from its home without tombstones.
	 */
	for (j = (i + 1) & m->mask; m->slots[j].used; j = (j + 1) & m->mask)
	{
		uint32 home = (uint32) m->slots[j].mid & m->mask;

		if (((j - home) & m->mask) >= ((j - i) & m->mask))
		{
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i].used = false;
	m->ninflight--;
	return true;
}

static void
inflight_clear(MqttSink *m)
{
	memset(m->slots, 0, sizeof(MqttInflight) * (m->mask + 1));
	m->ninflight = 0;
}

/* ---- callbacks: inside mosquitto_loop_* and mosquitto_publish ---- */

/* A libmosquitto result code (or MQTT 5 reason code) as text. */
static const char *
describe(int rc, int saved_errno)
{
	if (rc == MOSQ_ERR_ERRNO)
		return strerror(saved_errno);
	if (rc == MOSQ_ERR_EAI)
		return gai_strerror(saved_errno);
	if (rc >= 0x80)
		return mosquitto_reason_string(rc);
	if (rc == MOSQ_ERR_SUCCESS)
		return "the broker closed the connection";
	return mosquitto_strerror(rc);
}

/*
 * The connection failed or was lost.  Once connected, this fails the sink:
 * what is in flight is forgotten (the stream replays it from the slot).
 */
static void
mqtt_lost(MqttSink *m, int rc, int saved_errno)
{
	if (m->stopping || m->lost)
		return;
	m->lost = true;
	if (!m->connected)
	{
		snprintf(m->error, sizeof(m->error), "could not connect to MQTT broker %s:%d: %s%s%s",
				 m->host, m->port, describe(rc, saved_errno), m->last_log[0] ? ": " : "",
				 m->last_log);
		return;
	}
	m->connected = false;
	snprintf(m->error, sizeof(m->error), "lost the connection to MQTT broker %s:%d: %s", m->host,
			 m->port, describe(rc, saved_errno));
	strlcpy(m->warning, m->error, sizeof(m->warning));
	inflight_clear(m);
	m->sink->failed = true;
	cdc_sink_note_error(m->sink, true, "%s", m->error);
}

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
	MqttSink *m = obj;

	if (m->stopping || m->lost)
		return;
	if (rc == 0)
	{
		m->connected = true;
		return;
	}
	m->lost = true;
	snprintf(m->error, sizeof(m->error), "MQTT broker %s:%d refused the connection: %s", m->host,
			 m->port,
			 m->protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(rc)
											 : mosquitto_connack_string(rc));
}

static void
on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	mqtt_lost((MqttSink *) obj, rc, errno);
}

/* Published: PUBACK (QoS 1), PUBCOMP or a refusing PUBREC (QoS 2), sent (QoS 0). */
static void
on_publish(struct mosquitto *mosq, void *obj, int mid, int reason_code,
		   const mosquitto_property *props)
{
	MqttSink *m = obj;
	uint64 opaque;
	uint32 len;

	if (m->stopping)
		return;
	if (m->publishing && mid == m->pub_mid)
	{
		/* QoS 0, written within mosquitto_publish(): not in the table yet. */
		opaque = m->pub_opaque;
		len = m->pub_len;
		m->pub_acked = true;
	}
	else if (!inflight_take(m, mid, &opaque, &len))
		return;

	if (reason_code >= 0x80)
	{
		/* MQTT 5: the broker refused it.  Replay from the slot. */
		m->sink->failed = true;
		snprintf(m->warning, sizeof(m->warning), "MQTT broker %s:%d refused a message: %s",
				 m->host, m->port, mosquitto_reason_string(reason_code));
		cdc_sink_note_error(m->sink, false, "%s", m->warning);
		return;
	}
	cdc_sink_acked(m->sink, opaque, len);
}

/*
 * libmosquitto's log lines.  Errors and warnings are kept for the reason a
 * connection failed; everything goes to DEBUG1.  Registered only while
 * connecting, unless DEBUG1 is logged: libmosquitto formats a line for
 * every message sent and acknowledged.
 */
static void
on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
	MqttSink *m = obj;

	if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
		strlcpy(m->last_log, str, sizeof(m->last_log));
	ereport(DEBUG1, (errmsg_internal("bv_cdc sink %s: mosquitto: %s", m->sink->name, str)));
}

/* ---- driving the client ---- */

/*
 * mqtt_service
 *		Serve the client's socket: wait up to timeout_ms for it when there is
 *		something to wait for (a CONNACK, acknowledgements), read everything
 *		that is there, write what is queued, send keepalives.
 */
static void
mqtt_service(MqttSink *m, int timeout_ms)
{
	struct pollfd pfd;
	int sock = mosquitto_socket(m->mosq);
	int rc = MOSQ_ERR_SUCCESS;
	int saved_errno = 0;
	int round;

	if (sock < 0)
	{
		mqtt_lost(m, MOSQ_ERR_NO_CONN, 0);
		return;
	}
	if (m->connected && m->ninflight == 0)
		timeout_ms = 0;

	pfd.fd = sock;
	pfd.events = POLLIN | (mosquitto_want_write(m->mosq) ? POLLOUT : 0);
	pfd.revents = 0;
	/* While connecting, go on even without an event: a TLS handshake may. */
	if (poll(&pfd, 1, Max(timeout_ms, 0)) > 0 || !m->connected)
	{
		/*
		 * mosquitto_loop_read() also drives a TLS handshake, whichever way
		 * the socket is ready.  It reads at most as many packets as are in
		 * flight and stops early on a stale EAGAIN, hence errno = 0 and the
		 * loop while more is readable.
		 */
		for (round = 0; round < MQTT_READ_ROUNDS; round++)
		{
			errno = 0;
			rc = mosquitto_loop_read(m->mosq, 1);
			saved_errno = errno;
			if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(m->mosq) < 0)
				break;
			pfd.events = POLLIN;
			pfd.revents = 0;
			if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLIN))
				break;
		}
		if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0 &&
			mosquitto_want_write(m->mosq))
		{
			rc = mosquitto_loop_write(m->mosq, 1);
			saved_errno = errno;
		}
	}
	if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0)
		rc = mosquitto_loop_misc(m->mosq);

	/* Some failures (a TLS handshake) close the socket without a callback. */
	if (mosquitto_socket(m->mosq) < 0)
		mqtt_lost(m, rc != MOSQ_ERR_SUCCESS ? rc : MOSQ_ERR_CONN_LOST, saved_errno);

	if (m->warning[0] != '\0')
	{
		ereport(WARNING, (errcode(ERRCODE_CONNECTION_FAILURE),
						  errmsg("bv_cdc sink \"%s\": %s", m->sink->name, m->warning),
						  errhint("The worker reconnects with back-off and replays unacknowledged "
								  "changes from the slot.")));
		m->warning[0] = '\0';
	}
}

/* ---- the sink kind ---- */

static void
mqtt_validate(List *keys, List *values)
{
	const char *host = cdc_prop(mqtt_properties, keys, values, "host");
	const char *protocol = cdc_prop(mqtt_properties, keys, values, "protocol");
	const char *username = cdc_prop(mqtt_properties, keys, values, "username");
	const char *secret = cdc_prop(mqtt_properties, keys, values, "password_secret");
	const char *ca = cdc_prop(mqtt_properties, keys, values, "tls_ca_file");
	const char *cert = cdc_prop(mqtt_properties, keys, values, "tls_cert_file");
	const char *key = cdc_prop(mqtt_properties, keys, values, "tls_key_file");

	if (cdc_property(keys, values, "tls_insecure", NULL) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("MQTT sink property \"tls_insecure\" is not supported"),
				 errdetail("bv_cdc always verifies the broker's certificate and host name."),
				 errhint("Set \"tls_ca_file\" to the certificate of the CA that signed the "
						 "broker's certificate.")));
	cdc_check_properties("mqtt", keys, mqtt_properties);

	if (host == NULL || host[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("MQTT sink property \"host\" is required"),
				 errhint("Set \"host\" to the broker's host name or address, as in "
						 "{\"host\": \"localhost\", \"port\": 1883}.")));
	/* Lengths and ranges (client_id, port, keepalive_s ...): the property table. */
	cdc_check_property_values("mqtt", mqtt_properties, keys, values);

	if (strcmp(protocol, "3.1.1") != 0 && strcmp(protocol, "5") != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value \"%s\" for MQTT sink property \"protocol\"", protocol),
						errdetail("bv_cdc speaks MQTT \"3.1.1\" (the default) and \"5\".")));
	if (secret != NULL && username == NULL && strcmp(protocol, "5") != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("MQTT sink property \"password_secret\" requires \"username\""),
						errdetail("MQTT 3.1.1 sends a password only with a user name."),
						errhint("Set \"username\" as well, or use \"protocol\": \"5\".")));
	if ((cert == NULL) != (key == NULL))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("MQTT sink properties \"tls_cert_file\" and \"tls_key_file\" go "
							   "together"),
						errdetail("A client certificate is of no use without its private key."),
						errhint("Set both for a client certificate (mTLS), or neither.")));
	if (cert != NULL && ca == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("MQTT sink property \"tls_cert_file\" requires \"tls_ca_file\""),
						errdetail("bv_cdc uses TLS when \"tls_ca_file\" is set."),
						errhint("Set \"tls_ca_file\" to the certificate of the CA that signed the "
								"broker's certificate.")));
}

/* A file libmosquitto will read in start: say which one is unreadable. */
static bool
check_readable(const char *property, const char *path, char *errbuf, size_t errlen)
{
	if (path == NULL || access(path, R_OK) == 0)
		return true;
	snprintf(errbuf, errlen, "could not read %s \"%s\": %s", property, path, strerror(errno));
	return false;
}

/*
 * mqtt_start
 *		Create the sink's client and connect, waiting at most
 *		connect_timeout_ms for the broker's CONNACK (serving interrupts).
 *		false with errbuf on failure.
 */
static bool
mqtt_start(CdcSink *sink, char *errbuf, size_t errlen)
{
	List *keys = sink->conf_keys;
	List *values = sink->conf_values;
	/* unset: the table's default "bv_cdc_<sink>", with the sink's name */
	const char *client_id = cdc_property(keys, values, "client_id", NULL);
	const char *username = cdc_prop(mqtt_properties, keys, values, "username");
	const char *secret = cdc_prop(mqtt_properties, keys, values, "password_secret");
	const char *ca = cdc_prop(mqtt_properties, keys, values, "tls_ca_file");
	const char *cert = cdc_prop(mqtt_properties, keys, values, "tls_cert_file");
	const char *key = cdc_prop(mqtt_properties, keys, values, "tls_key_file");
	int keepalive = cdc_prop_int(mqtt_properties, keys, values, "keepalive_s");
	int connect_ms = cdc_prop_int(mqtt_properties, keys, values, "connect_timeout_ms");
	MemoryContext cxt;
	MqttSink *m;
	uint32 capacity = 16;
	TimestampTz deadline;
	int rc;

	if (!mqtt_lib_ready)
	{
		mosquitto_lib_init();
		mqtt_lib_ready = true;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "bv_cdc mqtt sink", ALLOCSET_SMALL_SIZES);
	m = MemoryContextAllocZero(cxt, sizeof(MqttSink));
	m->cxt = cxt;
	m->sink = sink;
	m->host = MemoryContextStrdup(cxt, cdc_prop(mqtt_properties, keys, values, "host"));
	m->port = cdc_prop_int(mqtt_properties, keys, values, "port");
	m->protocol = strcmp(cdc_prop(mqtt_properties, keys, values, "protocol"), "5") == 0
					  ? MQTT_PROTOCOL_V5
					  : MQTT_PROTOCOL_V311;
	m->max_inflight = cdc_prop_int(mqtt_properties, keys, values, "max_inflight");
	while (capacity < 2 * (uint32) m->max_inflight)
		capacity <<= 1;
	m->slots = MemoryContextAllocZero(cxt, sizeof(MqttInflight) * capacity);
	m->mask = capacity - 1;
	/* From here on stop() cleans up, also when an interrupt ends the worker. */
	sink->impl = m;

	if (!check_readable("tls_ca_file", ca, errbuf, errlen) ||
		!check_readable("tls_cert_file", cert, errbuf, errlen) ||
		!check_readable("tls_key_file", key, errbuf, errlen))
		goto fail;

	if (client_id != NULL)
		m->mosq = mosquitto_new(client_id, true, m);
	else
	{
		char *id = psprintf("bv_cdc_%s", sink->name);

		m->mosq = mosquitto_new(id, true, m);
		pfree(id);
	}
	if (m->mosq == NULL)
	{
		snprintf(errbuf, errlen, "could not create an MQTT client: %s", strerror(errno));
		goto fail;
	}
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, m->protocol);
	mosquitto_int_option(m->mosq, MOSQ_OPT_SEND_MAXIMUM, m->max_inflight);

	if (username != NULL || secret != NULL)
	{
		char *password = NULL;

		if (secret != NULL && (password = cdc_secret_get(secret)) == NULL)
		{
			snprintf(errbuf, errlen,
					 "could not read secret \"%s\" named by \"password_secret\" from bv.secrets",
					 secret);
			goto fail;
		}
		rc = mosquitto_username_pw_set(m->mosq, username, password);
		if (password != NULL)
		{
			explicit_bzero(password, strlen(password));
			pfree(password);
		}
		if (rc != MOSQ_ERR_SUCCESS)
		{
			snprintf(errbuf, errlen, "could not set the MQTT user name and password: %s",
					 mosquitto_strerror(rc));
			goto fail;
		}
	}

	if (ca != NULL)
	{
		/* Peer and host name verification stay on (libmosquitto's default). */
		rc = mosquitto_tls_set(m->mosq, ca, NULL, cert, key, NULL);
		if (rc != MOSQ_ERR_SUCCESS)
		{
			snprintf(errbuf, errlen, "could not set up TLS for the MQTT broker: %s",
					 mosquitto_strerror(rc));
			goto fail;
		}
	}

	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(m->mosq, on_publish);
	mosquitto_log_callback_set(m->mosq, on_log);

	errno = 0;
	rc = mosquitto_connect_async(m->mosq, m->host, m->port, keepalive);
	if (rc != MOSQ_ERR_SUCCESS)
	{
		mqtt_lost(m, rc, errno);
		snprintf(errbuf, errlen, "%s", m->error);
		goto fail;
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), connect_ms);
	while (!m->connected && !m->lost)
	{
		long remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (remaining <= 0)
		{
			snprintf(errbuf, errlen, "MQTT broker %s:%d did not accept the connection within %d ms",
					 m->host, m->port, connect_ms);
			goto fail;
		}
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		mqtt_service(m, (int) Min(remaining, MQTT_WAIT_SLICE_MS));
		pgstat_report_wait_end();
		cdc_sink_keepalive();
		CHECK_FOR_INTERRUPTS();
	}
	if (!m->connected)
	{
		snprintf(errbuf, errlen, "%s", m->error);
		goto fail;
	}

	if (!message_level_is_interesting(DEBUG1))
		mosquitto_log_callback_set(m->mosq, NULL);
	m->last_log[0] = '\0';
	ereport(DEBUG1, (errmsg_internal("bv_cdc sink %s connected to MQTT broker %s:%d", sink->name,
									 m->host, m->port)));
	return true;

fail:
	/* bv_cdc.stats shows the sink down, with the reason, until it is up again. */
	cdc_sink_note_error(sink, true, "%s", errbuf);
	mqtt_stop(sink);
	return false;
}

/*
 * mqtt_stop
 *		Disconnect and destroy the client without acknowledging anything in
 *		flight: what was not acknowledged will be replayed from the slot.
 */
static void
mqtt_stop(CdcSink *sink)
{
	MqttSink *m = sink->impl;

	if (m == NULL)
		return;
	m->stopping = true;
	if (m->mosq != NULL)
	{
		if (m->connected)
			(void) mosquitto_disconnect(m->mosq);
		mosquitto_destroy(m->mosq);
	}
	MemoryContextDelete(m->cxt);
	sink->impl = NULL;
	sink->pending = 0;
}

/* MQTT 5: the headers Kafka messages carry, as user properties. */
static int
mqtt_v5_properties(const CdcEvent *ev, mosquitto_property **props)
{
	const CdcHeaders *h = ev->h;
	char xid[24];
	int rc;

	snprintf(xid, sizeof(xid), INT64_FORMAT, h->xid);
	rc = mosquitto_property_add_string(props, MQTT_PROP_CONTENT_TYPE, "application/json");
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "op", h->op);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "table", h->table);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "lsn", h->lsn);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "xid", xid);
	if (rc == MOSQ_ERR_SUCCESS && ev->event_id != NULL)
		rc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "event_id",
												ev->event_id);
	if (rc == MOSQ_ERR_SUCCESS && h->traceparent != NULL)
		rc = mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, "traceparent",
												h->traceparent);
	return rc;
}

/*
 * mqtt_produce
 *		Publish one message.  Waits (serving acknowledgements, interrupts and
 *		the replication keepalive) while max_inflight messages are
 *		unacknowledged: that is how a slow broker stops the worker reading.
 */
static CdcProduceResult
mqtt_produce(CdcSink *sink, const CdcEvent *ev, char **err)
{
	MqttSink *m = sink->impl;
	mosquitto_property *props = NULL;
	int rc;
	int saved_errno;

	if (ev->len > MQTT_MAX_PAYLOAD)
	{
		*err = psprintf("the message has %zu bytes, more than MQTT's limit of %u", ev->len,
						MQTT_MAX_PAYLOAD);
		return CDC_PRODUCE_REJECTED;
	}

	while (m->connected && !sink->failed && m->ninflight >= m->max_inflight)
	{
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		mqtt_service(m, MQTT_WAIT_SLICE_MS);
		pgstat_report_wait_end();
		cdc_sink_keepalive();
		CHECK_FOR_INTERRUPTS();
	}
	if (!m->connected || sink->failed)
	{
		*err = pstrdup(m->lost ? m->error : sink->last_error);
		sink->failed = true;
		return CDC_PRODUCE_RESTART;
	}

	if (m->protocol == MQTT_PROTOCOL_V5 && (rc = mqtt_v5_properties(ev, &props)) != MOSQ_ERR_SUCCESS)
	{
		mosquitto_property_free_all(&props);
		*err = psprintf("could not build MQTT properties: %s", mosquitto_strerror(rc));
		return CDC_PRODUCE_RESTART;
	}

	m->publishing = true;
	m->pub_acked = false;
	m->pub_opaque = ev->opaque;
	m->pub_len = (uint32) ev->len;
	errno = 0;
	rc = mosquitto_publish_v5(m->mosq, &m->pub_mid, ev->topic, (int) ev->len, ev->payload,
							  ev->route->qos, ev->route->retain, props);
	saved_errno = errno;
	m->publishing = false;
	mosquitto_property_free_all(&props);

	/* Sent and acknowledged (QoS 0) within the call: done. */
	if (m->pub_acked)
		return CDC_PRODUCE_OK;
	if (rc == MOSQ_ERR_SUCCESS)
	{
		if (inflight_add(m, m->pub_mid, ev->opaque, (uint32) ev->len))
			return CDC_PRODUCE_OK;
		/* Cannot happen with max_inflight < 65536 and in-order acks; be safe. */
		*err = psprintf("MQTT packet identifier %d is still in flight", m->pub_mid);
		sink->failed = true;
		return CDC_PRODUCE_RESTART;
	}

	switch (rc)
	{
		case MOSQ_ERR_PAYLOAD_SIZE:
		case MOSQ_ERR_OVERSIZE_PACKET:
		case MOSQ_ERR_INVAL:
		case MOSQ_ERR_MALFORMED_UTF8:
		case MOSQ_ERR_QOS_NOT_SUPPORTED:
			*err = psprintf("%s (topic \"%s\", QoS %d, %zu bytes)", mosquitto_strerror(rc),
							ev->topic, ev->route->qos, ev->len);
			return CDC_PRODUCE_REJECTED;
		default:
			*err = psprintf("could not publish to MQTT broker %s:%d: %s", m->host, m->port,
							describe(rc, saved_errno));
			sink->failed = true;
			return CDC_PRODUCE_RESTART;
	}
}

static void
mqtt_poll(CdcSink *sink, int timeout_ms)
{
	mqtt_service((MqttSink *) sink->impl, timeout_ms);
}

/* Acknowledgements come within milliseconds while messages are in flight. */
static int
mqtt_wait_ms(CdcSink *sink)
{
	return ((MqttSink *) sink->impl)->ninflight > 0 ? 1 : -1;
}

/* The sink struct of a running client moved to a new config. */
static void
mqtt_rebind(CdcSink *sink)
{
	((MqttSink *) sink->impl)->sink = sink;
}

const CdcSinkOps cdc_mqtt_ops = {
	.kind = "mqtt",
	.properties = mqtt_properties,
	.topic_style = CDC_TOPIC_LEVELS,
	.topic_reserved = "/+#",
	.event_ids = true,
	.validate = mqtt_validate,
	.start = mqtt_start,
	.stop = mqtt_stop,
	.produce = mqtt_produce,
	.poll = mqtt_poll,
	.wait_ms = mqtt_wait_ms,
	.rebind = mqtt_rebind,
};
