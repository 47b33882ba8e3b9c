/*-------------------------------------------------------------------------
 *
 * bv_crypto.c
 *	  HMAC-SHA256, SHA-256, random bytes and MAC comparison on OpenSSL.
 *
 * Shared by bv_core (API key hashes, JWT HS256) and bv_cdc (webhook
 * signatures).  An extension that calls these links OpenSSL
 * (EXT_LIBS = -lcrypto); because libbvcommon.a is a static archive, an
 * extension that does not call them does not pull this object in.
 *
 * No state is kept: every call is self-contained and the caller owns the
 * buffers, so the functions are safe in any memory context.  Errors are
 * reported by return value, not ereport, so that callers decide the message
 * (and never put key material into one).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "bv_common.h"

/*
 * bv_hmac_sha256
 *		out (32 bytes) = HMAC-SHA256(key, msg).  Returns false on an OpenSSL
 *		failure (out is then zeroed).
 */
bool
bv_hmac_sha256(const uint8 *key, size_t keylen, const uint8 *msg,
			   size_t msglen, uint8 out[BV_SHA256_LEN])
{
	unsigned int outlen = 0;

	if (HMAC(EVP_sha256(), key, (int) keylen, msg, msglen, out, &outlen) == NULL ||
		outlen != BV_SHA256_LEN)
	{
		memset(out, 0, BV_SHA256_LEN);
		return false;
	}
	return true;
}

/*
 * bv_sha256
 *		out (32 bytes) = SHA-256(msg).
 */
bool
bv_sha256(const uint8 *msg, size_t msglen, uint8 out[BV_SHA256_LEN])
{
	unsigned int outlen = 0;

	return EVP_Digest(msg, msglen, out, &outlen, EVP_sha256(), NULL) == 1 &&
		   outlen == BV_SHA256_LEN;
}

/*
 * bv_random_bytes
 *		Fill buf with len bytes from OpenSSL's CSPRNG.
 */
bool
bv_random_bytes(uint8 *buf, size_t len)
{
	return RAND_bytes(buf, (int) len) == 1;
}

/*
 * bv_mac_equal
 *		Constant-time equality of two MACs or hashes of the same length
 *		(CRYPTO_memcmp).
 */
bool
bv_mac_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}
