/*-------------------------------------------------------------------------
 *
 * provision.c
 *	  Device secrets: generation, and hashing in mosquitto's password-file
 *	  format so that the broker can check a device's credentials itself.
 *
 * A secret is 24 random bytes (OpenSSL's RAND_bytes through
 * bv_random_bytes), base64url-encoded to 32 characters.  It is returned
 * once by iot.provision_device() and never stored: iot.devices keeps
 * "$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>", the format
 * mosquitto 2.0's password_file reads (mosquitto_passwd writes the same),
 * with a 12-byte random salt.  The secrets carry 190 bits of entropy, so
 * the iteration count only has to make the hash not free; it is kept low
 * enough (1000) for the broker to check many connections per second.
 *
 * Memory: results are palloc'd in the caller's context; no secret is
 * logged or put into an error message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "common/base64.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "bv_common.h"
#include "bv_iot.h"

#define IOT_SALT_LEN     12
#define IOT_HASH_LEN     64
#define IOT_ITERATIONS   1000
#define IOT_SECRET_BYTES 24

PG_FUNCTION_INFO_V1(iot_secret_new);
PG_FUNCTION_INFO_V1(iot_secret_hash);

static void
random_or_error(uint8 *buf, size_t len)
{
	if (!bv_random_bytes(buf, len))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("could not generate random bytes"),
						errhint("Check that OpenSSL's random generator works on this server.")));
}

Datum
iot_secret_new(PG_FUNCTION_ARGS)
{
	uint8 raw[IOT_SECRET_BYTES];
	char out[64];
	int len;
	int i;

	random_or_error(raw, sizeof(raw));
	len = pg_b64_encode((const char *) raw, sizeof(raw), out, sizeof(out) - 1);
	if (len < 0)
		elog(ERROR, "bv_iot: base64 encoding failed");
	/* base64url: the secret goes into URLs and shell commands unquoted. */
	for (i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_'
													 : out[i];
	out[len] = '\0';
	explicit_bzero(raw, sizeof(raw));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

Datum
iot_secret_hash(PG_FUNCTION_ARGS)
{
	text *secret = PG_GETARG_TEXT_PP(0);
	uint8 salt[IOT_SALT_LEN];
	uint8 hash[IOT_HASH_LEN];
	char salt64[32];
	char hash64[128];
	int sl, hl;

	if (VARSIZE_ANY_EXHDR(secret) < 1 || VARSIZE_ANY_EXHDR(secret) > 1024)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a secret must have 1 to 1024 bytes"),
						errhint("Use iot.provision_device(), which generates one.")));
	random_or_error(salt, sizeof(salt));
	if (PKCS5_PBKDF2_HMAC(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), salt, sizeof(salt),
						  IOT_ITERATIONS, EVP_sha512(), sizeof(hash), hash) != 1)
		elog(ERROR, "bv_iot: PBKDF2 failed");
	sl = pg_b64_encode((const char *) salt, sizeof(salt), salt64, sizeof(salt64) - 1);
	hl = pg_b64_encode((const char *) hash, sizeof(hash), hash64, sizeof(hash64) - 1);
	if (sl < 0 || hl < 0)
		elog(ERROR, "bv_iot: base64 encoding failed");
	salt64[sl] = '\0';
	hash64[hl] = '\0';
	explicit_bzero(hash, sizeof(hash));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("$7$%d$%s$%s", IOT_ITERATIONS, salt64, hash64)));
}
