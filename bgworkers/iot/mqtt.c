/*-------------------------------------------------------------------------
 *
 * mqtt.c
 *	  The bridge's MQTT client (libmosquitto): a persistent QoS 1 session
 *	  whose acknowledgements leave only after the batch has committed.
 *
 * The session: a fixed client id, clean session off, subscriptions at
 * QoS 1.  While the bridge is away the broker keeps the session, queues
 * new messages and redelivers the unacknowledged ones on reconnection.
 *
 * Acknowledging after commit.  libmosquitto 2.0.11 (Debian 12) has no
 * manual acknowledgement (mosquitto_manual_ack_set came later): on a QoS 1
 * PUBLISH it queues the PUBACK and then calls on_message.  Without a
 * library thread (threaded mode "none") a queued packet is written to the
 * socket at once; in "external threads" mode (mosquitto_threaded_set(true))
 * it stays in the client's outgoing queue until mosquitto_loop_write().
 * The bridge uses that mode without starting any thread: it reads
 * messages with mosquitto_loop_read() (their PUBACKs pile up in the queue),
 * commits the batch, and only then calls iot_mqtt_flush(), which writes
 * the queue.  So every PUBACK the broker receives is for a committed
 * message.  If the bridge dies before the flush, or the connection drops,
 * the queued PUBACKs die with it and the broker redelivers the messages.
 * Everything else the client sends (CONNECT, SUBSCRIBE, PINGREQ, command
 * PUBLISHes) goes through the same queue and the same flush; flushes happen
 * at least every batch_ms and every second when idle, well inside the
 * keep-alive.  The invariant the bridge keeps: no flush while the batch
 * holds uncommitted messages.
 *
 * Concurrency: single-threaded; callbacks run inside mosquitto_loop_* in
 * the worker's thread.  They only append to lists or set flags (nothing
 * that can throw longjmps through libmosquitto); on_message copies the
 * message into the inbox in the client's inbox context.
 *
 * Memory: libmosquitto mallocs its own state; the inbox lives in a memory
 * context the bridge resets after each batch (iot_mqtt_inbox_reset).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>

#include <mosquitto.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bv_iot.h"

static bool lib_ready = false;

static void
on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	IotMqtt *m = (IotMqtt *) obj;

	if (rc != 0)
	{
		m->lost = true;
		snprintf(m->error, sizeof(m->error), "the broker refused the connection: %s",
				 mosquitto_connack_string(rc));
		return;
	}
	m->connected = true;
	m->need_subscribe = true;
}

static void
on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count, const int *granted)
{
	IotMqtt *m = (IotMqtt *) obj;

	if (qos_count >= 1 && granted[0] > 2)
	{
		m->lost = true;
		snprintf(m->error, sizeof(m->error), "the broker refused a subscription");
		return;
	}
	if (--m->subacks_pending == 0)
		m->subscribed = true;
}

static void
on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	IotMqtt *m = (IotMqtt *) obj;

	m->connected = false;
	m->lost = true;
	if (m->error[0] == '\0')
		snprintf(m->error, sizeof(m->error), "connection lost: %s", mosquitto_strerror(rc));
}

static void
on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
	IotMqtt *m = (IotMqtt *) obj;
	MemoryContext old = MemoryContextSwitchTo(m->inbox_cxt);
	IotMessage *im = palloc(sizeof(IotMessage));

	im->topic = pstrdup(msg->topic);
	im->payload = palloc(msg->payloadlen + 1);
	if (msg->payloadlen > 0)
		memcpy(im->payload, msg->payload, msg->payloadlen);
	im->payload[msg->payloadlen] = '\0';
	im->len = msg->payloadlen;
	im->retained = msg->retain;
	im->at = GetCurrentTimestamp();
	m->inbox = lappend(m->inbox, im);
	MemoryContextSwitchTo(old);
}

void
iot_mqtt_init(IotMqtt *m, MemoryContext parent)
{
	memset(m, 0, sizeof(*m));
	m->inbox_cxt = AllocSetContextCreate(parent, "bv_iot inbox", ALLOCSET_DEFAULT_SIZES);
}

void
iot_mqtt_inbox_reset(IotMqtt *m)
{
	MemoryContextReset(m->inbox_cxt);
	m->inbox = NIL;
}

/*
 * iot_mqtt_connect
 *		Connect (blocking TCP connect, bounded by the OS) and send CONNECT;
 *		the CONNACK arrives through iot_mqtt_read().  False on failure,
 *		with m->error set.
 */
bool
iot_mqtt_connect(IotMqtt *m, const char *host, int port, const char *client_id,
				 const char *username, const char *password, int keepalive)
{
	int rc;

	if (!lib_ready)
	{
		mosquitto_lib_init();
		lib_ready = true;
	}
	iot_mqtt_close(m);
	m->error[0] = '\0';
	m->lost = false;
	m->connected = false;
	m->subscribed = false;
	m->subacks_pending = 0;
	m->mosq = mosquitto_new(client_id, false, m);
	if (m->mosq == NULL)
	{
		snprintf(m->error, sizeof(m->error), "mosquitto_new failed");
		return false;
	}
	/* No thread is started: this keeps PUBACKs queued until flushed. */
	mosquitto_threaded_set(m->mosq, true);
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_connect_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
	mosquitto_message_callback_set(m->mosq, on_message);
	mosquitto_subscribe_callback_set(m->mosq, on_subscribe);
	if (username != NULL)
		mosquitto_username_pw_set(m->mosq, username, password);
	rc = mosquitto_connect(m->mosq, host, port, keepalive);
	if (rc != MOSQ_ERR_SUCCESS)
	{
		snprintf(m->error, sizeof(m->error), "cannot connect to %s:%d: %s", host, port,
				 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
		iot_mqtt_close(m);
		return false;
	}
	return iot_mqtt_flush(m);
}

void
iot_mqtt_close(IotMqtt *m)
{
	if (m->mosq != NULL)
	{
		mosquitto_destroy(m->mosq);
		m->mosq = NULL;
	}
	m->connected = false;
}

int
iot_mqtt_socket(IotMqtt *m)
{
	return m->mosq ? mosquitto_socket(m->mosq) : -1;
}

static bool
check(IotMqtt *m, int rc, const char *what)
{
	if (rc == MOSQ_ERR_SUCCESS && !m->lost)
		return true;
	m->lost = true;
	if (m->error[0] == '\0')
		snprintf(m->error, sizeof(m->error), "%s: %s", what,
				 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
	return false;
}

/*
 * iot_mqtt_read
 *		Read what the socket has now (up to max_messages in the inbox);
 *		their PUBACKs are queued, not sent.  False when the connection is
 *		lost.
 */
bool
iot_mqtt_read(IotMqtt *m, int max_messages)
{
	int sock = iot_mqtt_socket(m);
	int rounds = 0;

	while (sock >= 0 && list_length(m->inbox) < max_messages && rounds++ < 4096)
	{
		struct pollfd p = {.fd = sock, .events = POLLIN};

		if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
			break;
		if (!check(m, mosquitto_loop_read(m->mosq, 1), "read"))
			return false;
	}
	return check(m, mosquitto_loop_misc(m->mosq), "keep-alive");
}

/*
 * iot_mqtt_flush
 *		Write every queued packet (PUBACKs of committed messages, PINGREQ,
 *		SUBSCRIBE, PUBLISH).  Call only when the batch holds no uncommitted
 *		message.
 */
bool
iot_mqtt_flush(IotMqtt *m)
{
	int sock = iot_mqtt_socket(m);
	int spins = 0;

	while (m->mosq != NULL && mosquitto_want_write(m->mosq))
	{
		struct pollfd p = {.fd = sock, .events = POLLOUT};

		if (!check(m, mosquitto_loop_write(m->mosq, 1000), "write"))
			return false;
		if (mosquitto_want_write(m->mosq) && poll(&p, 1, 100) == 0 && ++spins > 50)
			return check(m, MOSQ_ERR_CONN_LOST, "write timed out");
	}
	return !m->lost;
}

bool
iot_mqtt_subscribe(IotMqtt *m, char **topics, int ntopics)
{
	int i;

	m->subacks_pending = ntopics;
	m->subscribed = false;
	for (i = 0; i < ntopics; i++)
		if (!check(m, mosquitto_subscribe(m->mosq, NULL, topics[i], 1), "subscribe"))
			return false;
	m->need_subscribe = false;
	return true;
}

/* Queue a QoS 1 publish (written by the next flush). */
bool
iot_mqtt_publish(IotMqtt *m, const char *topic, const char *payload)
{
	return check(m, mosquitto_publish(m->mosq, NULL, topic, (int) strlen(payload), payload, 1, false),
				 "publish");
}
