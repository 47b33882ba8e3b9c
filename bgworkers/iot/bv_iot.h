/*-------------------------------------------------------------------------
 *
 * bv_iot.h
 *	  Declarations shared by bv_iot's files: the reading validator, the
 *	  batch writer, the MQTT client and the bridge worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_IOT_H
#define BV_IOT_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* Limits declared once: validation, the SQL checks and docs use them. */
#define IOT_ID_MAX            64    /* device id, metric name */
#define IOT_RAW_PREFIX        256   /* bytes of a refused payload kept */
#define IOT_DETAIL_MAX        200   /* bytes of a quarantine detail */
#define IOT_SUBJECT_MAX       1024  /* a certificate subject (its broker user name) */
#define IOT_SUBJECT_PARSE_MAX 65536 /* longer subjects are not parsed at all */

/* Validation limits (from iot.bridge_config, or its defaults). */
typedef struct IotLimits
{
	int max_payload_bytes;
	int max_readings;
	int64 max_future_us;
	int64 max_age_us;
} IotLimits;

/*
 * A batch: validated readings and refused input, as parallel arrays, in
 * the batch's memory context (reset after each flush).
 */
typedef struct IotBatch
{
	MemoryContext cxt;
	/* readings */
	int n, cap;
	Datum *device, *ts, *metric, *value, *payload, *topic, *raw;
	bool *value_null, *payload_null, *topic_null;
	/* quarantine */
	int nq, capq;
	Datum *q_topic, *q_device, *q_reason, *q_detail, *q_raw, *q_bytes;
	bool *q_topic_null, *q_device_null;
	/* messages (MQTT) in this batch, and the oldest one's arrival */
	int64 messages;
	TimestampTz first_at;
	/* command reports (ack/result), applied in the batch's transaction */
	List *reports; /* of IotReport * */
} IotBatch;

typedef struct IotReport
{
	char *device;
	char *kind; /* "ack" or "result" */
	char *payload;
} IotReport;

typedef struct IotFlushResult
{
	int64 inserted;
	int64 quarantined;
} IotFlushResult;

/* validate.c */
extern void iot_batch_init(IotBatch *b, MemoryContext parent);
extern void iot_batch_reset(IotBatch *b);
extern void iot_batch_quarantine(IotBatch *b, const char *topic, const char *device,
								 const char *reason, const char *detail, const char *raw,
								 int rawlen);
extern void iot_add_message(IotBatch *b, const IotLimits *lim, const char *topic,
							const char *topic_device, const char *payload, int len,
							TimestampTz now);
extern void iot_add_jsonb(IotBatch *b, const IotLimits *lim, Jsonb *jb, const char *topic,
						  const char *topic_device, const char *raw, int rawlen, TimestampTz now);

/* batch.c: inside a transaction with SPI connected */
extern IotFlushResult iot_batch_write(IotBatch *b, const char *source, const char *owner);

/* mqtt.c: the bridge's MQTT client */
struct mosquitto;

typedef struct IotMessage
{
	char *topic;
	char *payload; /* NUL-terminated copy */
	int len;
	bool retained;  /* a retained copy sent on SUBSCRIBE, not a live message */
	TimestampTz at; /* arrival at the bridge */
} IotMessage;

typedef struct IotMqtt
{
	struct mosquitto *mosq;
	bool connected;      /* CONNACK accepted, not lost since */
	bool lost;           /* refused or lost: error says why */
	bool need_subscribe; /* connected, subscriptions not sent yet */
	int subacks_pending; /* SUBSCRIBEs sent, SUBACK not yet received */
	bool subscribed;     /* every SUBACK received on this connection */
	char error[256];
	MemoryContext inbox_cxt;
	List *inbox; /* IotMessage *, received and not yet committed */
} IotMqtt;

extern void iot_mqtt_init(IotMqtt *m, MemoryContext parent);
extern void iot_mqtt_inbox_reset(IotMqtt *m);
extern bool iot_mqtt_connect(IotMqtt *m, const char *host, int port, const char *client_id,
							 const char *username, const char *password, int keepalive);
extern void iot_mqtt_close(IotMqtt *m);
extern int iot_mqtt_socket(IotMqtt *m);
extern bool iot_mqtt_read(IotMqtt *m, int max_messages);
extern bool iot_mqtt_flush(IotMqtt *m);
extern bool iot_mqtt_subscribe(IotMqtt *m, char **topics, int ntopics);
extern bool iot_mqtt_publish(IotMqtt *m, const char *topic, const char *payload);

/* brokerauth.c: the broker's password and ACL files, outside a transaction */
#define IOT_AUTH_POLL_MS  200  /* how often the bridge looks for registry changes */
#define IOT_AUTH_RETRY_MS 1000 /* after a failed write or signal */
extern void iot_auth_sync(const char *dir, const char *pidfile, const char *bridge_user,
						  const char *bridge_password, bool force);
extern void iot_auth_reset(void);

/* bridge.c */
extern void iot_begin_tx(void);
extern void iot_commit_tx(void);
extern PGDLLEXPORT void bv_iot_bridge_main(Datum arg);
extern char *iot_database;
extern int iot_naptime_ms;

#endif /* BV_IOT_H */
