/*
 * bv_iot_pub: an MQTT device for bv_iot's tests and benchmark (libmosquitto).
 *
 *   bv_iot_pub -p PORT -u USER -P SECRET -t TOPIC [-q QOS] [-w WINDOW]
 *       publishes each line of stdin as one message;
 *   bv_iot_pub ... -n MESSAGES -b READINGS [-s START_EPOCH_S] [-m METRIC]
 *       generates MESSAGES messages of READINGS readings each (an object
 *       when READINGS is 1, else an array), values 1, 2, ... and ts
 *       START + k milliseconds for the k-th reading, all distinct.
 *
 * Keeps up to WINDOW (default 1000) QoS 1 messages unacknowledged, waits
 * for every PUBACK, prints "acked N" and exits 0; exits 1 when the broker
 * refuses the connection or it is lost.  No library thread: the loop is
 * mosquitto_loop() in this thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>

static long acked = 0;
static int connected = 0;
static int failed = 0;

static void
on_connect(struct mosquitto *m, void *o, int rc)
{
	(void) m;
	(void) o;
	if (rc == 0)
		connected = 1;
	else
	{
		fprintf(stderr, "bv_iot_pub: connection refused: %s\n", mosquitto_connack_string(rc));
		failed = 1;
	}
}

static void
on_disconnect(struct mosquitto *m, void *o, int rc)
{
	(void) m;
	(void) o;
	if (rc != 0)
	{
		fprintf(stderr, "bv_iot_pub: connection lost: %s\n", mosquitto_strerror(rc));
		failed = 1;
	}
}

static void
on_publish(struct mosquitto *m, void *o, int mid)
{
	(void) m;
	(void) o;
	(void) mid;
	acked++;
}

static int
pump(struct mosquitto *m, int timeout_ms)
{
	int rc = mosquitto_loop(m, timeout_ms, 1);

	if (rc != MOSQ_ERR_SUCCESS || failed)
	{
		if (!failed)
			fprintf(stderr, "bv_iot_pub: %s\n", mosquitto_strerror(rc));
		return 0;
	}
	return 1;
}

int
main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *user = NULL, *pass = NULL, *topic = NULL, *metric = "m";
	int port = 1883, qos = 1, window = 1000, opt;
	long nmsg = -1, per = 1;
	double start = 0;
	long sent = 0;
	struct mosquitto *m;
	char id[64];
	char *line = NULL;
	size_t cap = 0;

	while ((opt = getopt(argc, argv, "h:p:u:P:t:q:w:n:b:s:m:")) != -1)
		switch (opt)
		{
			case 'h':
				host = optarg;
				break;
			case 'p':
				port = atoi(optarg);
				break;
			case 'u':
				user = optarg;
				break;
			case 'P':
				pass = optarg;
				break;
			case 't':
				topic = optarg;
				break;
			case 'q':
				qos = atoi(optarg);
				break;
			case 'w':
				window = atoi(optarg);
				break;
			case 'n':
				nmsg = atol(optarg);
				break;
			case 'b':
				per = atol(optarg);
				break;
			case 's':
				start = atof(optarg);
				break;
			case 'm':
				metric = optarg;
				break;
			default:
				fprintf(stderr, "usage: bv_iot_pub -p port -u user -P secret -t topic [-n msgs -b readings -s start]\n");
				return 2;
		}
	if (topic == NULL)
	{
		fprintf(stderr, "bv_iot_pub: -t topic is required\n");
		return 2;
	}
	mosquitto_lib_init();
	snprintf(id, sizeof(id), "bv_iot_pub_%d", (int) getpid());
	m = mosquitto_new(id, 1, NULL);
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_max_inflight_messages_set(m, (unsigned) window);
	mosquitto_connect_callback_set(m, on_connect);
	mosquitto_disconnect_callback_set(m, on_disconnect);
	mosquitto_publish_callback_set(m, on_publish);
	if (user)
		mosquitto_username_pw_set(m, user, pass);
	if (mosquitto_connect(m, host, port, 60) != MOSQ_ERR_SUCCESS)
	{
		fprintf(stderr, "bv_iot_pub: cannot connect to %s:%d\n", host, port);
		return 1;
	}
	while (!connected)
		if (!pump(m, 100))
			return 1;

	for (;;)
	{
		char *payload;
		size_t len;

		if (nmsg >= 0)
		{
			size_t pcap = 64 + per * 96;
			long k;

			if (sent >= nmsg)
				break;
			payload = malloc(pcap);
			len = 0;
			if (per > 1)
				payload[len++] = '[';
			for (k = 0; k < per; k++)
			{
				long seq = sent * per + k;

				len += snprintf(payload + len, pcap - len, "%s{\"metric\":\"%s\",\"value\":%ld,\"ts\":%.3f}",
								k ? "," : "", metric, seq + 1, start + seq / 1000.0);
			}
			if (per > 1)
				payload[len++] = ']';
			payload[len] = '\0';
		}
		else
		{
			ssize_t r = getline(&line, &cap, stdin);

			if (r < 0)
				break;
			if (r > 0 && line[r - 1] == '\n')
				line[--r] = '\0';
			payload = strdup(line);
			len = r;
		}
		/* Keep the window: wait for acknowledgements when it is full. */
		while (sent - acked >= window)
			if (!pump(m, 100))
				return 1;
		if (mosquitto_publish(m, NULL, topic, (int) len, payload, qos, 0) != MOSQ_ERR_SUCCESS)
		{
			fprintf(stderr, "bv_iot_pub: publish failed\n");
			return 1;
		}
		free(payload);
		sent++;
		if (sent % 64 == 0 && !pump(m, 0))
			return 1;
	}
	while (acked < sent)
		if (!pump(m, 100))
			return 1;
	mosquitto_disconnect(m);
	mosquitto_loop(m, 100, 1);
	printf("acked %ld\n", acked);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return 0;
}
