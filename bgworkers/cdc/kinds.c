/*-------------------------------------------------------------------------
 *
 * kinds.c
 *	  The registry of bv_cdc's sink kinds.
 *
 * The only file that names every kind: a new kind is one file that
 * implements a CdcSinkOps (its property table, validate, start, produce,
 * poll ...) and one line here; the configuration, the stream and the
 * shared sink layer (sink.c) know kinds only through their CdcSinkOps
 * (ADR 0033).  Runs in the worker and in ordinary backends (validate_sink).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "kinds.h"

static const CdcSinkOps *const all_kinds[] = {&cdc_kafka_ops, &cdc_mqtt_ops, &cdc_webhook_ops,
											  &cdc_amqp_ops, &cdc_nats_ops};

/* The number of kinds, and the i-th (for listings). */
int
cdc_sink_kind_count(void)
{
	return lengthof(all_kinds);
}

const CdcSinkOps *
cdc_sink_kind(int i)
{
	return all_kinds[i];
}

/* "kafka", "mqtt", ... and "nats": for messages that list the kinds. */
char *
cdc_sink_kind_names(void)
{
	StringInfoData s;
	int i;

	initStringInfo(&s);
	for (i = 0; i < lengthof(all_kinds); i++)
		appendStringInfo(&s, "%s\"%s\"", i == 0 ? "" : i == lengthof(all_kinds) - 1 ? " and "
																					: ", ",
						 all_kinds[i]->kind);
	return s.data;
}

/* The operations of a sink kind; NULL when the kind is unknown. */
const CdcSinkOps *
cdc_sink_ops(const char *kind)
{
	int i;

	for (i = 0; i < lengthof(all_kinds); i++)
		if (strcmp(all_kinds[i]->kind, kind) == 0)
			return all_kinds[i];
	return NULL;
}
