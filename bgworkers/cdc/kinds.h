/*-------------------------------------------------------------------------
 *
 * kinds.h
 *	  The sink kinds: each kind's file (producer.c for Kafka, mqtt.c,
 *	  webhook.c with spool.c, amqp.c, nats.c) defines its CdcSinkOps; the
 *	  registry (kinds.c) is the only file that lists them.  Used by the
 *	  layers above the kinds: config.c and api.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_CDC_KINDS_H
#define BV_CDC_KINDS_H

#include "sink.h"

/* kinds.c: the registry of sink kinds, the only file that names them all */
extern const CdcSinkOps cdc_kafka_ops;
extern const CdcSinkOps cdc_mqtt_ops;
extern const CdcSinkOps cdc_webhook_ops;
extern const CdcSinkOps cdc_amqp_ops;
extern const CdcSinkOps cdc_nats_ops;

extern const CdcSinkOps *cdc_sink_ops(const char *kind);
extern int cdc_sink_kind_count(void);
extern const CdcSinkOps *cdc_sink_kind(int i);
extern char *cdc_sink_kind_names(void);

#endif /* BV_CDC_KINDS_H */
