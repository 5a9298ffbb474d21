//! `cairn obj`: objects in pools, as `rados put/get/stat/ls/rm/lock/listsnaps/rollback`,
//! `cp`, and `extents` (what `rbd diff` and block status stand on).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use client::objects::Objects;
use proto::osd::{LockInfo, LockKind, ObjectName, ObjectOp, SnapList};

use crate::Format;
use crate::connect::Connect;
use crate::map::print_json;

#[derive(Subcommand)]
pub enum ObjCommand {
    /// Store a file (or stdin with `-`) as an object, replacing it whole.
    Put {
        pool: String,
        name: String,
        file: PathBuf,
    },
    /// Write an object's data to a file (or stdout with `-`).
    Get {
        pool: String,
        name: String,
        file: PathBuf,
        /// The object as it was at this snapshot (a pool snapshot's name, or an id).
        #[arg(long)]
        snap: Option<String>,
    },
    /// The object's clones: the snapshots each serves, its size, what it shares.
    Listsnaps {
        pool: String,
        name: String,
    },
    /// Make the object what it was at snapshot SNAP (a pool snapshot's name, or an id).
    Rollback {
        pool: String,
        name: String,
        snap: String,
    },
    /// The ranges of the object (or of the clone serving --snap) that hold data, as
    /// `offset~length`, 64 KiB granularity; the rest reads as zeros.
    Extents {
        pool: String,
        name: String,
        #[arg(long)]
        snap: Option<String>,
        /// Only within OFFSET.. (bytes).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Only this many bytes from --offset (none: to the end).
        #[arg(long)]
        length: Option<u64>,
    },
    /// Size, version and modification time.
    Stat {
        pool: String,
        name: String,
    },
    /// Copy SOURCE onto TARGET in the same pool (data, xattrs, omap), OSD to OSD, as
    /// `rados cp`; TARGET's locks stay.
    Cp {
        pool: String,
        source: String,
        target: String,
        /// SOURCE as it was at this snapshot (a pool snapshot's name, or an id).
        #[arg(long)]
        snap: Option<String>,
    },
    /// Every object in a pool.
    Ls {
        pool: String,
    },
    Rm {
        pool: String,
        name: String,
    },
    /// Advisory locks on an object, as `rados lock`.
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
}

#[derive(Subcommand)]
pub enum LockCommand {
    /// Take lock LOCK of the object: held until unlocked, broken, or --duration passes.
    Get {
        pool: String,
        name: String,
        lock: String,
        #[arg(long, default_value = "")]
        cookie: String,
        /// Shared holders must give the same tag.
        #[arg(long, default_value = "")]
        tag: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Seconds until the hold expires (none: never).
        #[arg(long)]
        duration: Option<u64>,
        /// Shared with other holders of the tag, not exclusive.
        #[arg(long)]
        shared: bool,
        /// Take it again if this client holds it with the cookie, moving its expiry.
        #[arg(long)]
        renew: bool,
    },
    /// Release this client's hold of LOCK.
    Unlock {
        pool: String,
        name: String,
        lock: String,
        #[arg(long, default_value = "")]
        cookie: String,
    },
    /// The kind, tag and holders of LOCK.
    Info { pool: String, name: String, lock: String },
    /// The object's locks.
    List { pool: String, name: String },
    /// Remove LOCKER's hold of LOCK (LOCKER as `lock info` names it, `client.NAME`).
    /// The holder is fenced first (its instance blocklisted, so that it cannot write after
    /// its lock is taken), unless --no-blocklist.
    Break {
        pool: String,
        name: String,
        lock: String,
        locker: String,
        #[arg(long, default_value = "")]
        cookie: String,
        #[arg(long)]
        no_blocklist: bool,
    },
}

pub async fn run(connect: &Connect, command: ObjCommand) -> Result<()> {
    let mon = Arc::new(connect.client()?);
    let mut objects = Objects::new(mon).await?;
    objects.op_timeout = std::time::Duration::from_secs(connect.timeout.max(1));
    match command {
        ObjCommand::Put { pool, name, file } => {
            let data = if file.as_os_str() == "-" {
                let mut data = Vec::new();
                std::io::stdin().read_to_end(&mut data).context("read stdin")?;
                data
            } else {
                std::fs::read(&file).with_context(|| format!("read {}", file.display()))?
            };
            let version = objects
                .write_full(&pool, &ObjectName::new(name.clone()), Bytes::from(data))
                .await?;
            if matches!(connect.format, Format::Json) {
                print_json(&serde_json::json!({ "name": name, "version": version.to_string() }))?;
            }
        }
        ObjCommand::Get { pool, name, file, snap } => {
            let snap = snap.map(|s| snap_id(&objects, &pool, &s)).transpose()?;
            let data = objects.read_full_at(&pool, &ObjectName::new(name), snap).await?;
            if file.as_os_str() == "-" {
                std::io::stdout().write_all(&data)?;
            } else {
                std::fs::write(&file, &data)
                    .with_context(|| format!("write {}", file.display()))?;
            }
        }
        ObjCommand::Stat { pool, name } => {
            let (size, version, mtime_ms) =
                objects.stat(&pool, &ObjectName::new(name.clone())).await?;
            match connect.format {
                Format::Json => print_json(&serde_json::json!({
                    "name": name, "size": size, "version": version.to_string(), "mtime_ms": mtime_ms,
                }))?,
                Format::Plain => {
                    println!("{pool}/{name} size {size} version {version} mtime_ms {mtime_ms}")
                }
            }
        }
        ObjCommand::Ls { pool } => {
            let list = objects.list(&pool).await?;
            match connect.format {
                Format::Json => print_json(
                    &list
                        .iter()
                        .map(|(o, size)| serde_json::json!({ "name": o.to_string(), "size": size }))
                        .collect::<Vec<_>>(),
                )?,
                Format::Plain => {
                    for (object, _) in list {
                        println!("{object}");
                    }
                }
            }
        }
        ObjCommand::Cp { pool, source, target, snap } => {
            let snap = snap.map(|s| snap_id(&objects, &pool, &s)).transpose()?;
            let (source, target) = (ObjectName::new(source), ObjectName::new(target));
            let version = objects.copy(&pool, &target, &source, snap).await?;
            if matches!(connect.format, Format::Json) {
                print_json(
                    &serde_json::json!({ "name": target.to_string(), "version": version.to_string() }),
                )?;
            }
        }
        ObjCommand::Rm { pool, name } => objects.remove(&pool, &ObjectName::new(name)).await?,
        ObjCommand::Lock { command } => lock(connect, &objects, command).await?,
        ObjCommand::Listsnaps { pool, name } => {
            let list = objects.list_snaps(&pool, &ObjectName::new(name.clone())).await?;
            match connect.format {
                Format::Json => print_json(&list)?,
                Format::Plain => print_snaps(&name, &list),
            }
        }
        ObjCommand::Extents { pool, name, snap, offset, length } => {
            let snap = snap.map(|s| snap_id(&objects, &pool, &s)).transpose()?;
            let object = ObjectName::new(name);
            let len = length.unwrap_or(u64::MAX);
            let extents = objects.extents(&pool, &object, snap, offset, len).await?;
            match connect.format {
                Format::Json => print_json(
                    &extents
                        .iter()
                        .map(|(offset, length)| {
                            serde_json::json!({ "offset": offset, "length": length })
                        })
                        .collect::<Vec<_>>(),
                )?,
                Format::Plain => {
                    for (offset, length) in extents {
                        println!("{offset}~{length}");
                    }
                }
            }
        }
        ObjCommand::Rollback { pool, name, snap } => {
            let snap = snap_id(&objects, &pool, &snap)?;
            objects.rollback(&pool, &ObjectName::new(name), snap, None).await?;
        }
    }
    Ok(())
}

/// A snapshot as the CLI names it: a pool snapshot's name, else a numeric id.
fn snap_id(objects: &Objects, pool: &str, snap: &str) -> Result<u64> {
    let map = objects.map();
    let named = map.pool_by_name(pool).and_then(|p| p.snaps.by_name(snap));
    match named {
        Some(id) => Ok(id),
        None => snap.parse().map_err(|_| {
            anyhow::anyhow!("pool {pool} has no snapshot '{snap}' (and it is not an id)")
        }),
    }
}

/// Clones as `rados listsnaps` shows them.
fn print_snaps(name: &str, list: &SnapList) {
    println!("{name}:");
    println!("cloneid\tsnaps\tsize\toverlap");
    for clone in &list.clones {
        let snaps: Vec<String> = clone.snaps.iter().rev().map(u64::to_string).collect();
        let overlap: Vec<String> =
            clone.overlap.iter().map(|(at, len)| format!("{at}~{len}")).collect();
        println!("{}\t{}\t{}\t[{}]", clone.id, snaps.join(","), clone.size, overlap.join(","));
    }
    if list.head_exists {
        println!("head\t-\t-\t-");
    }
}

async fn lock(connect: &Connect, objects: &Objects, command: LockCommand) -> Result<()> {
    let (pool, name, op) = match command {
        LockCommand::Get {
            pool,
            name,
            lock,
            cookie,
            tag,
            description,
            duration,
            shared,
            renew,
        } => {
            let kind = if shared { LockKind::Shared } else { LockKind::Exclusive };
            let duration_ms = duration.map(|s| s.saturating_mul(1000));
            (
                pool,
                name,
                ObjectOp::Lock { name: lock, kind, cookie, tag, description, duration_ms, renew },
            )
        }
        LockCommand::Unlock { pool, name, lock, cookie } => {
            (pool, name, ObjectOp::Unlock { name: lock, cookie })
        }
        LockCommand::Break { pool, name, lock, locker, cookie, no_blocklist: true } => {
            (pool, name, ObjectOp::BreakLock { name: lock, locker, cookie })
        }
        LockCommand::Break { pool, name, lock, locker, cookie, no_blocklist: false } => {
            let object = ObjectName::new(name);
            let fenced =
                objects.break_lock_fencing(&pool, &object, &lock, &locker, &cookie).await?;
            match connect.format {
                Format::Json => print_json(&serde_json::json!({ "blocklisted": fenced }))?,
                Format::Plain => println!("blocklisted {fenced}"),
            }
            return Ok(());
        }
        LockCommand::Info { pool, name, lock } => {
            let info = objects.lock_info(&pool, &ObjectName::new(name), &lock).await?;
            return print_lock(connect.format, &lock, info.as_ref());
        }
        LockCommand::List { pool, name } => {
            let names = objects.list_locks(&pool, &ObjectName::new(name)).await?;
            match connect.format {
                Format::Json => print_json(&names)?,
                Format::Plain => names.iter().for_each(|n| println!("{n}")),
            }
            return Ok(());
        }
    };
    objects.op(&pool, &ObjectName::new(name), vec![op], Bytes::new()).await?;
    Ok(())
}

/// A lock as `rados lock info` shows it.
fn print_lock(format: Format, lock: &str, info: Option<&LockInfo>) -> Result<()> {
    let kind = |k: LockKind| match k {
        LockKind::Exclusive => "exclusive",
        LockKind::Shared => "shared",
    };
    let holders = info.map(|i| i.holders.as_slice()).unwrap_or_default();
    if format == Format::Json {
        let lockers: Vec<serde_json::Value> = holders
            .iter()
            .map(|h| {
                serde_json::json!({
                    "name": h.client, "cookie": h.cookie, "address": h.addr,
                    "description": h.description, "expires_ms": h.expires_ms,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "name": lock,
            "type": info.map_or("", |i| kind(i.kind)),
            "tag": info.map_or("", |i| i.tag.as_str()),
            "lockers": lockers,
        }));
    }
    let Some(info) = info else {
        println!("{lock}: no holder");
        return Ok(());
    };
    println!("{lock}: {} tag '{}'", kind(info.kind), info.tag);
    for h in holders {
        let expires = h.expires_ms.map_or("never".to_owned(), |ms| ms.to_string());
        println!(
            "  {} cookie '{}' address {} expires_ms {expires} description '{}'",
            h.client, h.cookie, h.addr, h.description
        );
    }
    Ok(())
}
