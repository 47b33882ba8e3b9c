/*-------------------------------------------------------------------------
 *
 * wal_key.c
 *	  WAL mode: the key that signs the context messages.
 *
 * Any role may call pg_logical_emit_message(), so without a signature a
 * writer could put a "bv_audit" message of its own into its transaction,
 * in the middle of a statement (from a function the statement calls), and
 * have the worker name another actor for the statement's remaining rows.
 * So wal_context.c appends HMAC-SHA256(key, message) (the first 16 bytes,
 * hex) to each message, and wal_apply.c ignores messages whose MAC does not
 * match: the statement keeps the context of its genuine message.
 *
 * The key: 32 random bytes in the file bv_audit_wal.key of the data
 * directory (mode 0600, readable by the server's OS user only, like the
 * rest of it), created by the first process that needs it (O_EXCL: one
 * creator wins, the others read its key) and read once per process.  It
 * survives restarts, so messages written before a crash still verify when
 * the worker decodes them afterwards.  Roles cannot read it:
 * pg_read_binary_file() is for superusers (and pg_read_server_files), who
 * can bypass auditing anyway.
 *
 * Backend-local state: the key, once loaded, and an HMAC context keyed with
 * it (OpenSSL memory, kept for the life of the process).  No locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "storage/fd.h"

#include "bv_audit.h"
#include "bv_common.h"

#define WAL_KEY_FILE "bv_audit_wal.key"
#define WAL_KEY_LEN  32

static uint8 wal_key[WAL_KEY_LEN];
static bool wal_key_loaded = false;

/* Read exactly WAL_KEY_LEN bytes from an open file. */
static bool
read_key(int fd)
{
	ssize_t n = read(fd, wal_key, WAL_KEY_LEN);

	return n == WAL_KEY_LEN;
}

/* Load (or create) the key; ERROR when the data directory is unusable. */
static void
ensure_key(void)
{
	int fd;

	if (wal_key_loaded)
		return;
	fd = OpenTransientFile(WAL_KEY_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0 && errno == ENOENT)
	{
		uint8 fresh[WAL_KEY_LEN];

		if (!bv_random_bytes(fresh, WAL_KEY_LEN))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate the bv_audit WAL key")));
		fd = OpenTransientFilePerm(WAL_KEY_FILE, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY,
								   S_IRUSR | S_IWUSR);
		if (fd >= 0)
		{
			if (write(fd, fresh, WAL_KEY_LEN) != WAL_KEY_LEN || pg_fsync(fd) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not write file \"%s\": %m", WAL_KEY_FILE)));
			CloseTransientFile(fd);
			memcpy(wal_key, fresh, WAL_KEY_LEN);
			wal_key_loaded = true;
			return;
		}
		/* Another process created it first: read its key. */
		fd = OpenTransientFile(WAL_KEY_FILE, O_RDONLY | PG_BINARY);
	}
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", WAL_KEY_FILE),
				 errhint("The key signs bv_audit's WAL-mode context messages; it lives in the data directory.")));
	if (!read_key(fd))
	{
		CloseTransientFile(fd);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("file \"%s\" does not hold a %d-byte key", WAL_KEY_FILE, WAL_KEY_LEN),
				 errhint("Remove it while no table is in WAL mode and restart: a new key is created.")));
	}
	CloseTransientFile(fd);
	wal_key_loaded = true;
}

/*
 * The process's HMAC context, keyed once: OpenSSL's one-shot HMAC() fetches
 * the algorithm and builds a context on every call, which cost a writer
 * about 20,000 instructions per statement; re-initialising a keyed context
 * without a key restores its keyed state and costs a few hundred.
 */
static EVP_MAC_CTX *
mac_ctx(void)
{
	static EVP_MAC_CTX *ctx = NULL;

	if (ctx == NULL)
	{
		EVP_MAC *mac;
		EVP_MAC_CTX *fresh;
		OSSL_PARAM params[2];

		ensure_key();
		mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		fresh = mac ? EVP_MAC_CTX_new(mac) : NULL;
		EVP_MAC_free(mac); /* the context keeps its own reference */
		params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *) "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		if (fresh == NULL || EVP_MAC_init(fresh, wal_key, WAL_KEY_LEN, params) != 1)
		{
			EVP_MAC_CTX_free(fresh);
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not set up HMAC-SHA256 for bv_audit context messages")));
		}
		ctx = fresh;
	}
	return ctx;
}

/* The hex MAC (BV_AUDIT_WAL_MAC_HEX characters and a NUL) of a message. */
void
bv_audit_wal_mac(const char *msg, size_t len, char *hex)
{
	EVP_MAC_CTX *ctx = mac_ctx();
	uint8 mac[BV_SHA256_LEN];
	size_t maclen = 0;

	if (EVP_MAC_init(ctx, NULL, 0, NULL) != 1 || EVP_MAC_update(ctx, (const uint8 *) msg, len) != 1 ||
		EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)) != 1 || maclen != BV_SHA256_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not sign a bv_audit context message")));
	bv_hex_encode(mac, BV_AUDIT_WAL_MAC_HEX / 2, hex);
	hex[BV_AUDIT_WAL_MAC_HEX] = '\0';
}

/*
 * Split a signed message: its JSON and whether the MAC appended after the
 * last newline is the key's.  *len is set to the JSON's length.
 */
bool
bv_audit_wal_verify(const char *content, size_t *len)
{
	const char *nl = strrchr(content, '\n');
	char expect[BV_AUDIT_WAL_MAC_HEX + 1];

	if (nl == NULL || strlen(nl + 1) != BV_AUDIT_WAL_MAC_HEX)
		return false;
	*len = nl - content;
	bv_audit_wal_mac(content, *len, expect);
	return bv_ct_equal(expect, nl + 1, BV_AUDIT_WAL_MAC_HEX);
}
