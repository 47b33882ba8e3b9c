/*-------------------------------------------------------------------------
 *
 * bv_signature.c
 *	  Stripe-style webhook signatures: "t=<unix seconds>,v1=<hex HMAC>".
 *
 * A sender signs "<t>.<body>" with HMAC-SHA256 under a shared secret and
 * sends the header "t=<t>,v1=<hex>"; during a secret rotation it may send
 * several v1 values, one per secret.  A receiver accepts the request when one
 * v1 value matches its secret and t is within a tolerance of its clock, which
 * bounds replays.  Used by the CDC webhook sink (signing) and by the
 * receiving side helpers (commerce payment webhooks, bv_cdc.verify_signature).
 *
 * Comparisons of MACs are constant-time; the parser never allocates and
 * never reports the secret or the expected MAC.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "bv_common.h"

/*
 * bv_signature_verify
 *		Check "header" against "body" signed with "secret" at time "now".
 *
 * Returns BV_SIG_OK or the reason for refusal.  Unknown header elements are
 * ignored (forward compatibility, as Stripe's "v0" scheme); a header without
 * a t or without any v1 is malformed.
 */
BvSignatureResult
bv_signature_verify(const uint8 *secret, size_t secretlen,
					const char *header, const uint8 *body, size_t bodylen,
					int64 tolerance_s, int64 now)
{
	const char *p = header;
	int64 t = -1;
	bool seen_v1 = false;
	bool matched = false;
	uint8 expected[BV_SHA256_LEN];
	char tbuf[32];
	int tlen = 0;

	/* First pass: find t (the MAC covers it, so it must come first). */
	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t) (end - p) : strlen(p);

		if (len > 2 && p[0] == 't' && p[1] == '=')
		{
			int64 v = 0;
			size_t i;

			if (len - 2 > 18)
				return BV_SIG_MALFORMED;
			for (i = 2; i < len; i++)
			{
				if (p[i] < '0' || p[i] > '9')
					return BV_SIG_MALFORMED;
				v = v * 10 + (p[i] - '0');
			}
			t = v;
			tlen = (int) (len - 2);
			memcpy(tbuf, p + 2, tlen);
		}
		p = end ? end + 1 : p + len;
	}
	if (t < 0)
		return BV_SIG_MALFORMED;

	/* HMAC over "<t>.<body>", with the digits exactly as sent. */
	{
		uint8 *msg = palloc(tlen + 1 + bodylen);

		memcpy(msg, tbuf, tlen);
		msg[tlen] = '.';
		if (bodylen > 0)
			memcpy(msg + tlen + 1, body, bodylen);
		if (!bv_hmac_sha256(secret, secretlen, msg, tlen + 1 + bodylen, expected))
		{
			pfree(msg);
			return BV_SIG_MALFORMED;
		}
		pfree(msg);
	}

	/* Second pass: compare every v1 in constant time. */
	for (p = header; *p;)
	{
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t) (end - p) : strlen(p);

		if (len > 3 && p[0] == 'v' && p[1] == '1' && p[2] == '=')
		{
			uint8 given[BV_SHA256_LEN];

			seen_v1 = true;
			if (len - 3 == 2 * BV_SHA256_LEN &&
				bv_hex_decode(p + 3, 2 * BV_SHA256_LEN, given) &&
				bv_mac_equal(given, expected, BV_SHA256_LEN))
				matched = true;
		}
		p = end ? end + 1 : p + len;
	}
	if (!seen_v1)
		return BV_SIG_MALFORMED;
	if (!matched)
		return BV_SIG_MISMATCH;
	if (t < now - tolerance_s || t > now + tolerance_s)
		return BV_SIG_EXPIRED;
	return BV_SIG_OK;
}

/*
 * bv_signature_reason
 *		A sentence for an errdetail saying why a signature was refused.
 */
const char *
bv_signature_reason(BvSignatureResult result)
{
	switch (result)
	{
		case BV_SIG_OK:
			return "The signature is valid.";
		case BV_SIG_MALFORMED:
			return "The signature header is not of the form t=<unix seconds>,v1=<64 hex digits>.";
		case BV_SIG_MISMATCH:
			return "No v1 signature matches the body under the configured secret.";
		case BV_SIG_EXPIRED:
			return "The signature's timestamp is outside the tolerance.";
	}
	return "The signature is invalid.";
}
