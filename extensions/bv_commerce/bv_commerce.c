/*-------------------------------------------------------------------------
 *
 * bv_commerce.c
 *	  C parts of the commerce domain: payment webhook signatures.
 *
 * The domain logic of bv_commerce is SQL (sql/bv_commerce/); only what must
 * not be written in SQL lives here.  Checking a payment provider's webhook
 * signature needs a constant-time comparison of MACs, which SQL's "=" is
 * not, so commerce.signature_problem() wraps the suite's shared verifier
 * (extensions/common/bv_signature.c).
 *
 * No state, no locks; allocations are in the caller's memory context.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "bv_common.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(commerce_signature_problem);

/*
 * commerce.signature_problem(secret, header, body, tolerance_s): NULL when
 * "header" is a valid "t=...,v1=..." signature of "body" under "secret" made
 * within tolerance_s seconds of now, else a sentence saying why not (which
 * never contains the secret or the expected MAC).
 */
Datum
commerce_signature_problem(PG_FUNCTION_ARGS)
{
	text *secret;
	char *header;
	text *body;
	int32 tolerance;
	BvSignatureResult result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_TEXT_P(cstring_to_text(bv_signature_reason(BV_SIG_MALFORMED)));

	secret = PG_GETARG_TEXT_PP(0);
	header = text_to_cstring(PG_GETARG_TEXT_PP(1));
	body = PG_GETARG_TEXT_PP(2);
	tolerance = PG_ARGISNULL(3) ? 300 : PG_GETARG_INT32(3);

	if (tolerance < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tolerance must not be negative"),
				 errhint("Pass the accepted clock difference in seconds, such as 300.")));
	if (VARSIZE_ANY_EXHDR(secret) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook secret must not be empty"),
				 errhint("Store the payment provider's signing secret first.")));

	result = bv_signature_verify((const uint8 *) VARDATA_ANY(secret),
								 VARSIZE_ANY_EXHDR(secret), header,
								 (const uint8 *) VARDATA_ANY(body),
								 VARSIZE_ANY_EXHDR(body), tolerance,
								 (int64) time(NULL));
	if (result == BV_SIG_OK)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(bv_signature_reason(result)));
}
