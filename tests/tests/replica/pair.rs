//! The private primary and hot standby of `scripts/replica` (ports 5442 and 5443 unless
//! `MURMUR_PRIMARY_PORT` / `MURMUR_REPLICA_PORT` say otherwise): started by the first test
//! that needs them and stopped after the last one, unless they were running before; and a
//! fresh database in them per test.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Tests holding the pair, and whether they started it.
static HOLDERS: Mutex<(usize, bool)> = Mutex::new((0, false));

fn port(variable: &str, default: u16) -> u16 {
    std::env::var(variable)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

fn script(command: &str) -> Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/replica");
    Command::new(&path)
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("running {} {command}: {e}", path.display()))
}

/// The pair, held while this lives.
pub struct Pair {
    primary_port: u16,
    replica_port: u16,
}

/// Starts the pair (if no other test holds it), or `None` with the reason printed where
/// this machine cannot make a second cluster.
pub fn acquire() -> Option<Pair> {
    let mut holders = HOLDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if holders.0 == 0 {
        let running = script("status").status.success();
        if !running {
            let started = script("start");
            match started.status.code() {
                Some(0) => {}
                Some(2) => {
                    eprintln!(
                        "skipped: a second PostgreSQL cluster cannot be made here: {}",
                        String::from_utf8_lossy(&started.stderr).trim()
                    );
                    return None;
                }
                _ => panic!(
                    "scripts/replica start failed: {}",
                    String::from_utf8_lossy(&started.stderr)
                ),
            }
        }
        holders.1 = !running;
    }
    holders.0 += 1;
    Some(Pair {
        primary_port: port("MURMUR_PRIMARY_PORT", 5442),
        replica_port: port("MURMUR_REPLICA_PORT", 5443),
    })
}

impl Drop for Pair {
    fn drop(&mut self) {
        let mut holders = HOLDERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        holders.0 -= 1;
        if holders.0 == 0 && holders.1 {
            let stopped = script("stop");
            if !stopped.status.success() {
                eprintln!(
                    "scripts/replica stop failed: {}",
                    String::from_utf8_lossy(&stopped.stderr)
                );
            }
        }
    }
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}?sslmode=disable")
}

impl Pair {
    /// A fresh database on the primary, once the standby has it too.
    pub async fn database(&self, name: &str) -> Database {
        let name = format!("murmur_replica_{name}_{}", std::process::id());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url(self.primary_port, "postgres"))
            .await
            .expect("connecting to the private primary");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .expect("dropping a leftover database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("creating the test database");
        let database = Database {
            name,
            primary_port: self.primary_port,
            replica_port: self.replica_port,
            admin,
        };
        database.replayed().await;
        database
    }
}

/// One test's database on the pair.
pub struct Database {
    pub name: String,
    primary_port: u16,
    replica_port: u16,
    admin: PgPool,
}

impl Database {
    pub fn primary_url(&self) -> String {
        url(self.primary_port, &self.name)
    }

    pub fn replica_url(&self) -> String {
        url(self.replica_port, &self.name)
    }

    pub fn primary(&self) -> PgConnectOptions {
        self.primary_url()
            .parse::<PgConnectOptions>()
            .expect("a URL")
            .disable_statement_logging()
    }

    pub fn replica(&self) -> PgConnectOptions {
        self.replica_url()
            .parse::<PgConnectOptions>()
            .expect("a URL")
            .disable_statement_logging()
    }

    /// A pool on the standby's copy of the database.
    pub async fn replica_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(self.replica())
            .await
            .expect("connecting to the standby")
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    pub async fn replayed(&self) {
        let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.admin)
            .await
            .expect("reading the primary's WAL position");
        let standby = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url(self.replica_port, "postgres"))
            .await
            .expect("connecting to the standby");
        for _ in 0..3000 {
            let caught_up: bool =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
                    .bind(&written)
                    .fetch_one(&standby)
                    .await
                    .expect("reading the standby's replay position");
            if caught_up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the standby did not replay up to {written} in 30 s");
    }

    /// Drops the database (the standby replays the drop).
    pub async fn drop(self) {
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .expect("dropping the test database");
    }
}
