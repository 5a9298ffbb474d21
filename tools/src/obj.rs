//! `cairn obj`: objects in pools, as `rados put/get/stat/ls/rm`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use client::objects::Objects;
use proto::osd::ObjectName;

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
    },
    /// Size, version and modification time.
    Stat {
        pool: String,
        name: String,
    },
    /// Every object in a pool.
    Ls {
        pool: String,
    },
    Rm {
        pool: String,
        name: String,
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
        ObjCommand::Get { pool, name, file } => {
            let data = objects.read_full(&pool, &ObjectName::new(name)).await?;
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
        ObjCommand::Rm { pool, name } => objects.remove(&pool, &ObjectName::new(name)).await?,
    }
    Ok(())
}
