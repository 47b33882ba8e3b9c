/*-------------------------------------------------------------------------
 *
 * secrets.c
 *	  AES-256-GCM sealing of secrets under a master key read from a file:
 *	  bv._secret_seal(), bv._secret_open() and bv._secret_reseal(), used by
 *	  bv.secret_set(), bv.secret_get() and bv.secrets_rotate_master_key().
 *
 * The master key is 32 bytes in the file named by bv.master_key_file
 * (PGC_SIGHUP): either 32 raw bytes or 64 hex digits and an optional
 * newline.  The file is refused unless it is a regular file owned by the
 * server's OS user with no group or other permission bits (mode 0600 or
 * 0400), like the server's own ssl_key_file check.
 *
 * A sealed value is
 *		0x01 | key id (4 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)
 * with a fresh random nonce per seal and the secret's name as additional
 * authenticated data, so a sealed value copied to another name does not
 * open.  The key id (the first 4 bytes of SHA-256("bv secrets key id" ||
 * key)) tells "wrong master key" apart from "altered value".
 *
 * Memory and state: the key is read on first use and kept in a static
 * buffer of the backend; a change of bv.master_key_file (assign hook,
 * e.g. after a reload) wipes it with OPENSSL_cleanse so the next use reads
 * the new file.  Plaintexts are palloc'd in the caller's context.  No
 * shared state, no locks.  No message here ever contains a secret value,
 * the key, or the key file's contents, and every error raised here hides
 * the statement (errhidestmt): the failing statement would otherwise be
 * logged, value included, by log_min_error_statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "bv_common.h"
#include "bv_core.h"

#define MASTER_KEY_LEN 32
#define KEY_ID_LEN     4
#define NONCE_LEN      12
#define TAG_LEN        16
#define SEAL_VERSION   0x01
#define SEAL_OVERHEAD  (1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN)

static uint8 master_key[MASTER_KEY_LEN];
static uint8 master_key_id[KEY_ID_LEN];
static bool master_key_loaded = false;

/*
 * Assign hook of bv.master_key_file: forget the key; it is read again,
 * from the new file, on next use.
 */
void
bv_secrets_assign_master_key_file(const char *newval, void *extra)
{
	OPENSSL_cleanse(master_key, sizeof(master_key));
	master_key_loaded = false;
}

static void master_key_error(const char *detail) pg_attribute_noreturn();

static void
master_key_error(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("the secrets master key is not usable"),
			 errdetail("%s", detail),
			 errhidestmt(true),
			 errhint("Point bv.master_key_file at a file of 32 random bytes (or 64 hex digits), owned by the server's OS user with mode 0600, for example: head -c 32 /dev/urandom > master.key && chmod 600 master.key.")));
}

/*
 * Read and check a key file (the rules above) into key and its id into id.
 * "setting" names where the path came from, for messages.
 */
static void
read_key_file(const char *path, const char *setting, uint8 key[MASTER_KEY_LEN],
			  uint8 id[KEY_ID_LEN])
{
	int fd;
	struct stat st;
	uint8 buf[MASTER_KEY_LEN * 2 + 2];
	ssize_t n;
	uint8 idbuf[BV_SHA256_LEN];
	uint8 idinput[17 + MASTER_KEY_LEN];

	if (path == NULL || path[0] == '\0')
		master_key_error(psprintf("The setting %s is empty.", setting));
	fd = open(path, O_RDONLY | O_NOFOLLOW | PG_BINARY, 0);
	if (fd < 0)
		master_key_error(psprintf("The file named by %s cannot be opened: %m.", setting));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		close(fd);
		master_key_error(psprintf("The file named by %s is not a regular file.", setting));
	}
	if (st.st_uid != geteuid())
	{
		close(fd);
		master_key_error(psprintf("The file named by %s is not owned by the server's OS user.", setting));
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		master_key_error(psprintf("The file named by %s is accessible by group or others; it must have mode 0600.", setting));
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n == MASTER_KEY_LEN * 2 + 1 && buf[n - 1] == '\n')
		n--;
	if (n == MASTER_KEY_LEN * 2 && bv_hex_decode((const char *) buf, n, key))
		;
	else if (n == MASTER_KEY_LEN)
		memcpy(key, buf, MASTER_KEY_LEN);
	else
	{
		OPENSSL_cleanse(buf, sizeof(buf));
		master_key_error(psprintf("The file named by %s must hold exactly 32 bytes or 64 hex digits.", setting));
	}
	OPENSSL_cleanse(buf, sizeof(buf));

	memcpy(idinput, "bv secrets key id", 17);
	memcpy(idinput + 17, key, MASTER_KEY_LEN);
	if (!bv_sha256(idinput, sizeof(idinput), idbuf))
		master_key_error("OpenSSL could not derive the key id.");
	OPENSSL_cleanse(idinput, sizeof(idinput));
	memcpy(id, idbuf, KEY_ID_LEN);
}

/* The master key of bv.master_key_file, read once. */
static void
load_master_key(void)
{
	if (master_key_loaded)
		return;
	read_key_file(bv_master_key_file, "bv.master_key_file", master_key, master_key_id);
	master_key_loaded = true;
}

static void crypto_failure(const char *what) pg_attribute_noreturn();

static void
crypto_failure(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("could not %s the secret", what),
			 errdetail("OpenSSL reported a failure of AES-256-GCM."),
			 errhidestmt(true),
			 errhint("Check the server log for OpenSSL problems; the secret value is never logged.")));
}

/* AES-256-GCM; returns false only when decryption fails authentication. */
static bool
gcm(bool encrypt, const uint8 *key, const uint8 *nonce, const uint8 *aad, int aad_len,
	const uint8 *in, int in_len, uint8 *out, uint8 *tag)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int len = 0;
	int ok;

	if (ctx == NULL)
		crypto_failure(encrypt ? "seal" : "open");
	ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, encrypt ? 1 : 0) == 1 &&
		 EVP_CipherUpdate(ctx, NULL, &len, aad, aad_len) == 1 &&
		 (in_len == 0 || EVP_CipherUpdate(ctx, out, &len, in, in_len) == 1);
	if (!ok)
	{
		EVP_CIPHER_CTX_free(ctx);
		crypto_failure(encrypt ? "seal" : "open");
	}
	if (encrypt)
	{
		ok = EVP_CipherFinal_ex(ctx, out + len, &len) == 1 &&
			 EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
		EVP_CIPHER_CTX_free(ctx);
		if (!ok)
			crypto_failure("seal");
		return true;
	}
	ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1 &&
		 EVP_CipherFinal_ex(ctx, out + len, &len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok;
}

PG_FUNCTION_INFO_V1(bv_secret_seal);

/*
 * bv._secret_seal(name text, value text) returns bytea.
 */
Datum
bv_secret_seal(PG_FUNCTION_ARGS)
{
	text *name = PG_GETARG_TEXT_PP(0);
	text *value = PG_GETARG_TEXT_PP(1);
	int vlen = VARSIZE_ANY_EXHDR(value);
	bytea *out;
	uint8 *p;

	load_master_key();
	out = palloc(VARHDRSZ + SEAL_OVERHEAD + vlen);
	SET_VARSIZE(out, VARHDRSZ + SEAL_OVERHEAD + vlen);
	p = (uint8 *) VARDATA(out);
	p[0] = SEAL_VERSION;
	memcpy(p + 1, master_key_id, KEY_ID_LEN);
	if (!bv_random_bytes(p + 1 + KEY_ID_LEN, NONCE_LEN))
		crypto_failure("seal");
	gcm(true, master_key, p + 1 + KEY_ID_LEN, (const uint8 *) VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name),
		(const uint8 *) VARDATA_ANY(value), vlen, p + 1 + KEY_ID_LEN + NONCE_LEN,
		p + 1 + KEY_ID_LEN + NONCE_LEN + vlen);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(bv_secret_open);

/*
 * bv._secret_open(name text, sealed bytea) returns text.
 */
Datum
bv_secret_open(PG_FUNCTION_ARGS)
{
	text *name = PG_GETARG_TEXT_PP(0);
	bytea *sealed = PG_GETARG_BYTEA_PP(1);
	const uint8 *p = (const uint8 *) VARDATA_ANY(sealed);
	int len = VARSIZE_ANY_EXHDR(sealed);
	int clen;
	text *out;

	load_master_key();
	if (len < SEAL_OVERHEAD || p[0] != SEAL_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed secret is malformed"),
				 errdetail("The stored value is not in the bv_core sealed format, version 1."),
				 errhidestmt(true),
				 errhint("Set the secret again with bv.secret_set().")));
	if (CRYPTO_memcmp(p + 1, master_key_id, KEY_ID_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("secret was sealed with a different master key"),
				 errdetail("The key id stored with the secret does not match the key in bv.master_key_file."),
				 errhidestmt(true),
				 errhint("Restore the master key the secret was written with, or set the secret again.")));
	clen = len - SEAL_OVERHEAD;
	out = palloc(VARHDRSZ + clen + 1);
	SET_VARSIZE(out, VARHDRSZ + clen);
	if (!gcm(false, master_key, p + 1 + KEY_ID_LEN, (const uint8 *) VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name),
			 p + 1 + KEY_ID_LEN + NONCE_LEN, clen, (uint8 *) VARDATA(out),
			 (uint8 *) p + 1 + KEY_ID_LEN + NONCE_LEN + clen))
	{
		OPENSSL_cleanse(VARDATA(out), clen);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("secret could not be decrypted"),
				 errdetail("The stored value was altered or was sealed for another secret name."),
				 errhidestmt(true),
				 errhint("Set the secret again with bv.secret_set().")));
	}
	/* the value was text when sealed: check the encoding anyway */
	pg_verifymbstr(VARDATA(out), clen, false);
	PG_RETURN_TEXT_P(out);
}

PG_FUNCTION_INFO_V1(bv_secret_reseal);

/*
 * bv._secret_reseal(name text, sealed bytea, old_key_file text) returns
 * bytea: a value sealed under the key in old_key_file, sealed again under
 * the current master key (master key rotation).  A value already sealed
 * under the current key is returned unchanged, so a rotation that stopped
 * half-way can be run again.
 */
Datum
bv_secret_reseal(PG_FUNCTION_ARGS)
{
	text *name = PG_GETARG_TEXT_PP(0);
	bytea *sealed = PG_GETARG_BYTEA_PP(1);
	char *old_file = text_to_cstring(PG_GETARG_TEXT_PP(2));
	const uint8 *p = (const uint8 *) VARDATA_ANY(sealed);
	int len = VARSIZE_ANY_EXHDR(sealed);
	uint8 old_key[MASTER_KEY_LEN];
	uint8 old_id[KEY_ID_LEN];
	int clen;
	uint8 *plain;
	bytea *out;
	uint8 *q;
	bool ok;

	load_master_key();
	if (len < SEAL_OVERHEAD || p[0] != SEAL_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("sealed secret is malformed"),
				 errdetail("The stored value is not in the bv_core sealed format, version 1."),
				 errhidestmt(true),
				 errhint("Set the secret again with bv.secret_set().")));
	if (CRYPTO_memcmp(p + 1, master_key_id, KEY_ID_LEN) == 0)
		PG_RETURN_BYTEA_P(sealed);
	read_key_file(old_file, "the old key file", old_key, old_id);
	if (CRYPTO_memcmp(p + 1, old_id, KEY_ID_LEN) != 0)
	{
		OPENSSL_cleanse(old_key, sizeof(old_key));
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("secret was sealed with neither the old nor the current master key"),
				 errdetail("The key id stored with the secret matches neither key file."),
				 errhidestmt(true),
				 errhint("Find the key file the secret was written with, or set the secret again.")));
	}
	clen = len - SEAL_OVERHEAD;
	plain = palloc(clen + 1);
	ok = gcm(false, old_key, p + 1 + KEY_ID_LEN, (const uint8 *) VARDATA_ANY(name),
			 VARSIZE_ANY_EXHDR(name), p + 1 + KEY_ID_LEN + NONCE_LEN, clen, plain,
			 (uint8 *) p + 1 + KEY_ID_LEN + NONCE_LEN + clen);
	OPENSSL_cleanse(old_key, sizeof(old_key));
	if (!ok)
	{
		OPENSSL_cleanse(plain, clen);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("secret could not be decrypted"),
				 errdetail("The stored value was altered or was sealed for another secret name."),
				 errhidestmt(true),
				 errhint("Set the secret again with bv.secret_set().")));
	}
	out = palloc(VARHDRSZ + len);
	SET_VARSIZE(out, VARHDRSZ + len);
	q = (uint8 *) VARDATA(out);
	q[0] = SEAL_VERSION;
	memcpy(q + 1, master_key_id, KEY_ID_LEN);
	if (!bv_random_bytes(q + 1 + KEY_ID_LEN, NONCE_LEN))
		crypto_failure("seal");
	gcm(true, master_key, q + 1 + KEY_ID_LEN, (const uint8 *) VARDATA_ANY(name),
		VARSIZE_ANY_EXHDR(name), plain, clen, q + 1 + KEY_ID_LEN + NONCE_LEN,
		q + 1 + KEY_ID_LEN + NONCE_LEN + clen);
	OPENSSL_cleanse(plain, clen);
	PG_RETURN_BYTEA_P(out);
}

PG_FUNCTION_INFO_V1(bv_random_token);

/*
 * bv._random_token(prefix text) returns text: prefix followed by the
 * base64url of 32 random bytes (API keys).
 */
Datum
bv_random_token(PG_FUNCTION_ARGS)
{
	text *prefix = PG_GETARG_TEXT_PP(0);
	int plen = VARSIZE_ANY_EXHDR(prefix);
	uint8 bytes[32];
	char *out = palloc(plen + BV_B64URL_ENC_LEN(sizeof(bytes)) + 1);
	size_t n;

	if (!bv_random_bytes(bytes, sizeof(bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not generate random bytes"),
				 errdetail("OpenSSL's random generator failed."),
				 errhint("Check the server's entropy source.")));
	memcpy(out, VARDATA_ANY(prefix), plen);
	n = bv_b64url_encode(bytes, sizeof(bytes), out + plen);
	OPENSSL_cleanse(bytes, sizeof(bytes));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out, plen + n));
}
