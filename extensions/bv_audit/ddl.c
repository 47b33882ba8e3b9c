/*-------------------------------------------------------------------------
 *
 * ddl.c
 *	  What an ALTER TABLE did to the columns of a tracked table, for the
 *	  event trigger that mirrors it.
 *
 * bv_audit._on_ddl() (an event trigger on ddl_command_end, PL/pgSQL) keeps
 * an audit table in step with its tracked table.  Most of what it needs is
 * in the catalogs after the command, but one fact is only in the command
 * itself: whether ALTER COLUMN ... TYPE rewrote the values with a USING
 * expression (ALTER COLUMN amt TYPE bigint USING amt * 1000 leaves the type
 * change looking safe while every stored value changed).  The event
 * trigger's pg_ddl_command carries the parse tree of each subcommand;
 * bv_audit._rewritten_columns() reads it and returns the attribute numbers
 * of the columns whose type change had a USING clause, so that the event
 * trigger records the new value of every row.  bv_audit._retyped_columns()
 * returns every column whose type an ALTER TABLE changed, with or without
 * USING: the stamp columns' guard refuses both to a table's owner.
 *
 * ALTER TYPE ... RENAME VALUE changes what every row holding that enum
 * label says without touching a row; ALTER TYPE ... ADD VALUE changes
 * nothing stored.  Both have the command tag ALTER TYPE, so
 * bv_audit._renamed_enum_label() reads the parse tree to tell them apart and
 * returns the label a rename gave (the event trigger then records the rows
 * that hold it).
 *
 * Only reads the collected command handed in; no memory kept, no locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "nodes/parsenodes.h"
#include "tcop/deparse_utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "bv_audit.h"

/*
 * The attnums of the columns an ALTER TABLE changed with ALTER COLUMN ...
 * TYPE: only those with a USING clause when using_only, else all of them.
 */
static ArrayType *
altered_type_columns(CollectedCommand *cmd, bool using_only)
{
	Datum *attnums;
	int n = 0;
	ListCell *lc;

	if (cmd == NULL || cmd->type != SCT_AlterTable)
		return construct_empty_array(INT2OID);
	attnums = palloc(sizeof(Datum) * Max(list_length(cmd->d.alterTable.subcmds), 1));
	foreach (lc, cmd->d.alterTable.subcmds)
	{
		CollectedATSubcmd *sub = (CollectedATSubcmd *) lfirst(lc);
		AlterTableCmd *at = (AlterTableCmd *) sub->parsetree;
		ColumnDef *def;

		if (at == NULL || !IsA(at, AlterTableCmd) || at->subtype != AT_AlterColumnType)
			continue;
		def = (ColumnDef *) at->def;
		if (using_only && (def == NULL || !IsA(def, ColumnDef) || def->raw_default == NULL))
			continue;
		if (sub->address.classId == RelationRelationId && sub->address.objectSubId > 0)
			attnums[n++] = Int16GetDatum((int16) sub->address.objectSubId);
	}
	return construct_array(attnums, n, INT2OID, sizeof(int16), true, TYPALIGN_SHORT);
}

PG_FUNCTION_INFO_V1(bv_audit_rewritten_columns);

/*
 * bv_audit._rewritten_columns(pg_ddl_command) returns smallint[]: the
 * attnums of the columns an ALTER TABLE changed with ALTER COLUMN ... TYPE
 * ... USING (empty for any other command).
 */
Datum
bv_audit_rewritten_columns(PG_FUNCTION_ARGS)
{
	PG_RETURN_ARRAYTYPE_P(altered_type_columns((CollectedCommand *) PG_GETARG_POINTER(0), true));
}

PG_FUNCTION_INFO_V1(bv_audit_retyped_columns);

/*
 * bv_audit._retyped_columns(pg_ddl_command) returns smallint[]: the attnums
 * of the columns an ALTER TABLE changed with ALTER COLUMN ... TYPE, with or
 * without USING (a change of type or typmod converts the stored values:
 * timestamptz to timestamp and back moves them by the session's TimeZone).
 */
Datum
bv_audit_retyped_columns(PG_FUNCTION_ARGS)
{
	PG_RETURN_ARRAYTYPE_P(altered_type_columns((CollectedCommand *) PG_GETARG_POINTER(0), false));
}

PG_FUNCTION_INFO_V1(bv_audit_renamed_enum_label);

/*
 * bv_audit._renamed_enum_label(pg_ddl_command) returns text: the new label
 * of ALTER TYPE ... RENAME VALUE, NULL for any other command.
 */
Datum
bv_audit_renamed_enum_label(PG_FUNCTION_ARGS)
{
	CollectedCommand *cmd = (CollectedCommand *) PG_GETARG_POINTER(0);
	AlterEnumStmt *stmt;

	if (cmd == NULL || cmd->type != SCT_Simple || cmd->parsetree == NULL ||
		!IsA(cmd->parsetree, AlterEnumStmt))
		PG_RETURN_NULL();
	stmt = (AlterEnumStmt *) cmd->parsetree;
	if (stmt->oldVal == NULL || stmt->newVal == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(stmt->newVal));
}
