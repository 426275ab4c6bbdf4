//! Shadow copies of a projection's tables: one schema per projection,
//! `murmur_shadow_<name>`, holding an empty copy of each of its tables (same columns,
//! constraints and index names as `public`) and its own `projection_checkpoints`, so the
//! runtime's unchanged `apply_batch` builds it under `search_path = <shadow>, public`.
//! [`swap`] moves the shadow tables into `public`; [`drop_all`] forgets a rebuild.

use anyhow::{bail, Context};
use murmur_projections::Kind;
use sqlx::{PgConnection, Row};

/// The shadow schema of a projection.
pub fn schema(projection: &str) -> String {
    format!("murmur_shadow_{projection}")
}

/// Where the live tables go during a swap, dropped right after it commits.
fn retired(projection: &str) -> String {
    format!("murmur_retired_{projection}")
}

/// Projection and table names become identifiers in DDL: accept only plain ones.
fn identifier(name: &str) -> anyhow::Result<&str> {
    let plain = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        bail!("{name:?} is not a plain lowercase identifier");
    }
    Ok(name)
}

/// Drops whatever an earlier (interrupted) rebuild of `projection` left behind.
pub async fn drop_all(conn: &mut PgConnection, projection: &str) -> anyhow::Result<()> {
    let name = identifier(projection)?;
    for schema in [schema(name), retired(name)] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("dropping schema {schema}"))?;
    }
    Ok(())
}

/// Creates the shadow schema of `projection` afresh: empty copies of its tables, with the
/// same constraint and index names as the live ones (so they keep them after the swap).
/// The copies are logged from the start: written once by `COPY` (an unlogged copy would be
/// rewritten whole to become logged before the swap). The indexes
/// `apply` never reads are left out: [`create_deferred_indexes`] builds them after the load.
pub async fn create(conn: &mut PgConnection, projection: Kind) -> anyhow::Result<()> {
    let name = identifier(projection.name())?;
    drop_all(conn, name).await?;
    let shadow = schema(name);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let mut ddl = vec![
        format!("CREATE SCHEMA {shadow}"),
        format!(
            "CREATE TABLE {shadow}.projection_checkpoints \
             (LIKE public.projection_checkpoints INCLUDING ALL)"
        ),
    ];
    for table in projection.tables() {
        let table = identifier(table)?;
        ddl.push(format!(
            "CREATE TABLE {shadow}.{table} \
             (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES)"
        ));
        // Index-backed constraints first (ON CONFLICT needs them), then plain indexes.
        let constraints = sqlx::query(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'x')
             ORDER BY conname",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .with_context(|| format!("reading the constraints of {table}"))?;
        for row in constraints {
            let (constraint, def): (String, String) =
                (row.try_get("conname")?, row.try_get("def")?);
            ddl.push(format!(
                "ALTER TABLE {shadow}.{table} ADD CONSTRAINT \"{constraint}\" {def}"
            ));
        }
        for def in plain_indexes(&mut tx, table, projection.deferred_indexes(), false).await? {
            ddl.push(on_shadow(&def, table, &shadow)?);
        }
        // Storage parameters (fillfactor) too, so counters keep being updated in place.
        let options: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT reloptions FROM pg_class WHERE oid = ('public.' || $1)::regclass",
        )
        .bind(table)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("reading the storage parameters of {table}"))?;
        if let Some(options) = options.filter(|o| !o.is_empty()) {
            ddl.push(format!(
                "ALTER TABLE {shadow}.{table} SET ({})",
                options.join(", ")
            ));
        }
    }
    for statement in ddl {
        sqlx::query(&statement)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("creating the shadow tables: {statement}"))?;
    }
    tx.commit().await.context("committing the shadow tables")?;
    Ok(())
}

/// `CREATE INDEX` statements of the live indexes on `table` that back no constraint: those
/// named in `deferred` (`wanted`) or all the others (`!wanted`).
async fn plain_indexes(
    conn: &mut PgConnection,
    table: &str,
    deferred: &[&str],
    wanted: bool,
) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = ('public.' || $1)::regclass
           AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
           AND (c.relname = ANY($2)) = $3
         ORDER BY i.indexrelid",
    )
    .bind(table)
    .bind(deferred)
    .bind(wanted)
    .fetch_all(conn)
    .await
    .with_context(|| format!("reading the indexes of {table}"))
}

/// A live index definition moved onto the shadow copy of its table.
fn on_shadow(def: &str, table: &str, shadow: &str) -> anyhow::Result<String> {
    let live = format!(" ON public.{table} USING ");
    if !def.contains(&live) {
        bail!("unexpected index definition on {table}: {def}");
    }
    Ok(def.replacen(&live, &format!(" ON {shadow}.{table} USING "), 1))
}

/// Builds the indexes [`create`] left out (`Projection::deferred_indexes`): once, over the
/// loaded rows, which is faster than maintaining them row by row during the bulk load.
pub async fn create_deferred_indexes(
    conn: &mut PgConnection,
    projection: Kind,
) -> anyhow::Result<()> {
    let deferred = projection.deferred_indexes();
    if deferred.is_empty() {
        return Ok(());
    }
    let shadow = schema(identifier(projection.name())?);
    sqlx::query("SET maintenance_work_mem = '1GB'")
        .execute(&mut *conn)
        .await
        .context("setting maintenance_work_mem")?;
    for table in projection.tables() {
        let table = identifier(table)?;
        for def in plain_indexes(&mut *conn, table, deferred, true).await? {
            let statement = on_shadow(&def, table, &shadow)?;
            sqlx::query(&statement)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("building a deferred index: {statement}"))?;
        }
    }
    sqlx::query("RESET maintenance_work_mem")
        .execute(&mut *conn)
        .await
        .context("resetting maintenance_work_mem")?;
    Ok(())
}

/// Points `conn` at a projection's shadow tables: the projection's unqualified table names
/// (and `projection_checkpoints`) now mean the shadow copies; `events` is still `public`'s.
pub async fn enter(conn: &mut PgConnection, projection: &str) -> anyhow::Result<()> {
    let shadow = schema(identifier(projection)?);
    sqlx::query(&format!("SET search_path TO {shadow}, public"))
        .execute(conn)
        .await
        .context("setting the search path to the shadow schema")?;
    Ok(())
}

/// Inside the caller's transaction: retires the live tables of `projection` and moves the
/// shadow ones into `public` (names of tables, constraints and indexes are kept). The
/// caller writes the live checkpoint in the same transaction and then calls [`drop_all`].
pub async fn swap(tx: &mut PgConnection, projection: Kind) -> anyhow::Result<()> {
    let name = identifier(projection.name())?;
    let (shadow, retired) = (schema(name), retired(name));
    sqlx::query(&format!("CREATE SCHEMA {retired}"))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating {retired}"))?;
    for table in projection.tables() {
        let table = identifier(table)?;
        for statement in [
            format!("ALTER TABLE public.{table} SET SCHEMA {retired}"),
            format!("ALTER TABLE {shadow}.{table} SET SCHEMA public"),
        ] {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("swapping: {statement}"))?;
        }
    }
    Ok(())
}
