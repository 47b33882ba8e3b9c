/*-------------------------------------------------------------------------
 *
 * bv_audit.h
 *	  Shared declarations of the bv_audit extension (schema "bv_audit").
 *
 * The C side of bv_audit is a handful of trigger functions and helpers that
 * the install script wires together:
 *
 *	context.c	who, when and from where: bv.actor(), bv.trace_context(),
 *				application name and client address, read once per
 *				statement through cached FmgrInfos
 *	stamp.c		the BEFORE trigger that fills created_* / updated_*
 *	capture.c	the AFTER trigger that writes the mirrored audit rows
 *	guard.c		the append-only guard on audit tables and the one door
 *				through which purge may delete
 *	digest.c	the per-row SHA-256 digest used by seal() and verify()
 *	audit_id.c	audit_id values: blocks of the sequence shared through
 *				shared memory when bv_audit is preloaded
 *	ddl.c		what an ALTER TABLE did to a tracked table's columns (for
 *				the event trigger that mirrors it)
 *	wal_context.c	WAL mode, writer side: the context message of each
 *				statement that writes a WAL-mode table (hooks)
 *	wal_decode.c	WAL mode, worker side: wal2json documents as typed values
 *	wal_apply.c	WAL mode, worker side: decoded changes to audit records
 *	wal_worker.c	WAL mode: the background worker and its settings
 *	wal_key.c	WAL mode: the key that signs context messages
 *	bv_audit.c	_PG_init and the relcache invalidation wiring
 *
 *-------------------------------------------------------------------------
 */
#ifndef BV_AUDIT_H
#define BV_AUDIT_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/jsonb.h"

/* Names of the metadata columns that lead every audit table. */
#define BV_AUDIT_NMETA 9

/* context.c */
typedef struct BvAuditContext
{
	Datum actor; /* text, never NULL */
	Datum trace; /* text */
	bool trace_null;
	Datum app; /* text */
	bool app_null;
	Datum client; /* inet */
	bool client_null;
} BvAuditContext;

extern const BvAuditContext *bv_audit_context(void);

/* capture.c / stamp.c: relcache invalidation of their caches */
extern void bv_audit_capture_invalidate(Oid relid);
extern void bv_audit_stamp_invalidate(Oid relid);

/* audit_id.c */
extern void bv_audit_ids_init(void);
extern int64 bv_audit_next_id(Oid seqrelid);

/* WAL mode (ADR 0013) */
#define BV_AUDIT_WAL_SLOT "bv_audit_wal"
/* The advisory lock (two keys) under which the worker drops an unused slot;
 * enable(..., mode => 'wal') holds it shared (sql, _wal_check()). */
#define BV_AUDIT_WAL_SLOT_LOCK "1652125, 19"
#define BV_AUDIT_WAL_PREFIX    "bv_audit"
#define BV_AUDIT_WAL_MARKER    "bv_audit_wal"

/* hex characters of the MAC (SipHash-2-4, 64 bits) of a context message */
#define BV_AUDIT_WAL_MAC_HEX 16

extern char *bv_audit_database;

/* SipHash state after the whole 8-byte blocks of a message prefix */
typedef struct BvAuditMacState
{
	uint64 v0, v1, v2, v3;
} BvAuditMacState;

extern void bv_audit_wal_mac(const char *msg, size_t len, char *hex);
extern size_t bv_audit_wal_mac_start(BvAuditMacState *st, const char *prefix, size_t len);
extern void bv_audit_wal_mac_finish(const BvAuditMacState *st, size_t done, const char *msg,
									size_t len, char *hex);
extern bool bv_audit_wal_verify(const char *content, size_t *len);
extern uint64 bv_audit_siphash24(const uint8 key[16], const uint8 *msg, size_t len);
extern void bv_audit_wal_hooks_init(void);
extern void bv_audit_wal_emit_context(void);
extern void bv_audit_wal_worker_init(void);
extern void bv_audit_wal_wake_worker(void);
extern PGDLLEXPORT void bv_audit_wal_worker_main(Datum main_arg);

/* wal_apply.c, wal_stream.c: the worker's decoding session */
extern bool bv_audit_wal_in_worker;
extern char **bv_audit_wal_stream_read(const char *slot, XLogRecPtr upto, int max_changes,
									   int *ndocs, bool *complete);
extern bool bv_audit_wal_stream_open(void);
extern void bv_audit_wal_stream_confirm(XLogRecPtr applied);
extern void bv_audit_wal_stream_close(void);

/* wal_decode.c: the worker's view of WAL-mode tables and their changes */
/* A mirrored column of a WAL-mode table. */
typedef struct WalCol
{
	int16 src_attnum; /* in the tracked table (wal2json's "position") */
	char *name;       /* audit column (= source column) name */
	Oid typid;        /* the audit column's type */
	int32 typmod;
	Oid typinput;
	Oid typioparam;
	int16 typlen;
	bool typbyval;
	bool bytea; /* wal2json writes bare hex */
	bool live;  /* the source column still exists: recorded */
} WalCol;

typedef struct WalTable
{
	int32 tracked_id;
	char *schema;
	char *table;
	char *audit_table;
	XLogRecPtr wal_lsn;
	XLogRecPtr wal_until; /* InvalidXLogRecPtr: open */
	int ncols;
	WalCol *cols; /* ordered by src_attnum */
	int nlive;
	int *live; /* indexes into cols of the recorded columns */
	Datum *live_names;
	int nkey;
	int *key; /* index into cols of each key column, -1 when missing */
	char **keynames;
	SPIPlanPtr lookup; /* key, upper audit_ts -> live columns of the last record */
	int nlookup;       /* its parameters */
	SPIPlanPtr insert; /* meta + live columns */
} WalTable;

/* One decoded change of the statement being buffered. */
typedef struct WalChange
{
	char kind; /* I U D T */
	WalTable *t;
	Datum *val; /* by cols[]: the new image (I, U) */
	bool *null;
	bool *present;
	bool has_old;  /* oldkey known (U, D) */
	Datum *oldkey; /* by key[] */
	bool *oldkey_null;
	bool has_new;
	Datum *newkey;
	bool *newkey_null;
	bool keychg;
	bool has_prev; /* the last record, by cols[] */
	Datum *prev;
	bool *prev_null;
} WalChange;

/* A value as wal2json wrote it: null, a string (unescaped) or other JSON */
typedef enum WalValKind
{
	WAL_VAL_NULL,
	WAL_VAL_STRING,
	WAL_VAL_LITERAL /* a number, true or false, or (jsonb path) an object or array: its JSON text */
} WalValKind;

typedef struct WalVal
{
	WalValKind kind;
	char *text;
} WalVal;

/* An element of a document's "columns" or "identity" */
typedef struct WalDocCol
{
	char *name;
	int position;
	WalVal value;
} WalDocCol;

/* One wal2json document (format-version 2): the fields the worker reads */
typedef struct WalDoc
{
	char *action, *schema, *table, *xid, *lsn, *timestamp, *content;
	WalDocCol *cols;
	int ncols, maxcols;
	WalDocCol *ident;
	int nident, maxident;
	bool nested; /* a value was an object or array */
} WalDoc;

extern WalTable *bv_audit_wal_load_tables(XLogRecPtr applied, int *ntables);
extern WalTable *bv_audit_wal_find_table(WalTable *tables, int ntables, const char *schema,
										 const char *table, XLogRecPtr clsn);
extern void bv_audit_wal_parse_doc(char *json, WalDoc *doc);
extern void bv_audit_wal_parse_change(WalChange *ch, WalTable *t, char kind, const WalDoc *doc);

/* guard.c */
extern bool bv_audit_purge_active;

#endif /* BV_AUDIT_H */
