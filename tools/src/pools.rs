//! `cairn pool ...`, `cairn crush ...` and `cairn rule ...`: pools, the CRUSH hierarchy
//! and the rules that place the pools' PGs in it.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use placement::RuleKind;
use proto::Command;
use proto::message::{NewRule, PoolField, PoolSpec};

use crate::Format;
use crate::connect::{Connect, change};
use crate::map::print_json;

#[derive(Subcommand)]
pub enum CrushCommand {
    /// Add a bucket (`cairn crush add-bucket rack1 rack --parent default`).
    AddBucket {
        name: String,
        type_name: String,
        #[arg(long)]
        parent: Option<String>,
    },
    /// Move a bucket or an OSD (`osd.N`) under another bucket.
    Move { name: String, parent: String },
    /// Remove an empty bucket, or take an OSD (`osd.N`) out of the hierarchy.
    Rm { name: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolType {
    Replicated,
    Erasure,
}

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Create a pool: replicated (--size) or erasure (--k, --m).
    Create {
        name: String,
        #[arg(value_enum, default_value = "replicated")]
        kind: PoolType,
        #[arg(long)]
        size: Option<u8>,
        #[arg(long)]
        min_size: Option<u8>,
        #[arg(long)]
        k: Option<u8>,
        #[arg(long)]
        m: Option<u8>,
        /// An erasure pool from a named profile (`osd erasure-code-profile set`).
        #[arg(long, conflicts_with_all = ["k", "m", "size"])]
        profile: Option<String>,
        /// Default: sized from the OSDs under the rule.
        #[arg(long)]
        pg_num: Option<u32>,
        #[arg(long)]
        rule: Option<String>,
        /// A rule of the pool's own (named after it) with copies or shards on distinct
        /// buckets of this type (default host when --class is given).
        #[arg(long, conflicts_with = "rule")]
        failure_domain: Option<String>,
        /// A rule of the pool's own on OSDs of this device class only.
        #[arg(long, conflicts_with = "rule")]
        class: Option<String>,
    },
    /// Delete a pool and everything in it.
    Delete {
        name: String,
        #[arg(long)]
        yes_i_really_mean_it: bool,
    },
    /// Change a pool: size, min_size, pg_num, pgp_num or rule.
    Set { name: String, field: String, value: String },
    /// The pools with their size, rule and PG count.
    Ls,
    /// Per pool: data stored, objects, raw space used, space left.
    Df,
    /// Take snapshot SNAP of every object in the pool (`rados mksnap`).
    Mksnap { pool: String, snap: String },
    /// Remove pool snapshot SNAP; its clones are trimmed.
    Rmsnap { pool: String, snap: String },
    /// The pool's snapshots: id, name, when taken.
    Lssnap { pool: String },
}

#[derive(Subcommand)]
pub enum RuleCommand {
    /// A rule placing copies on distinct FAILURE_DOMAINs under ROOT (of CLASS).
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "replicated")]
        kind: PoolType,
        #[arg(long, default_value = "default")]
        root: String,
        #[arg(long, default_value = "host")]
        failure_domain: String,
        #[arg(long)]
        class: Option<String>,
    },
    /// Remove a rule no pool uses.
    Rm { name: String },
    /// The rules with their steps.
    Ls,
}

pub async fn crush(connect: &Connect, command: CrushCommand) -> Result<()> {
    let command = match command {
        CrushCommand::AddBucket { name, type_name, parent } => {
            Command::CrushAddBucket { name, type_name, parent }
        }
        CrushCommand::Move { name, parent } => Command::CrushMove { name, parent },
        CrushCommand::Rm { name } => Command::CrushRemove { name },
    };
    change(connect, command).await
}

pub async fn pool(connect: &Connect, command: PoolCommand) -> Result<()> {
    let command = match command {
        PoolCommand::Ls => {
            let map = connect.client()?.map().await?;
            match connect.format {
                Format::Json => print_json(&map.contents().pools.values().collect::<Vec<_>>())?,
                Format::Plain => {
                    for pool in map.contents().pools.values() {
                        println!(
                            "{}\t{}\tsize {}\tpg_num {}",
                            pool.id,
                            pool.name,
                            pool.size(),
                            pool.pg_num
                        );
                    }
                }
            }
            return Ok(());
        }
        PoolCommand::Df => return crate::pg::pool_df_command(connect).await,
        PoolCommand::Mksnap { pool, snap } => {
            let objects = client::objects::Objects::new(Arc::new(connect.client()?)).await?;
            let id = objects.pool_snap_create(&pool, &snap).await?;
            match connect.format {
                Format::Json => print_json(&serde_json::json!({ "name": snap, "id": id }))?,
                Format::Plain => println!("created pool {pool} snap {snap} (id {id})"),
            }
            return Ok(());
        }
        PoolCommand::Rmsnap { pool, snap } => {
            let objects = client::objects::Objects::new(Arc::new(connect.client()?)).await?;
            objects.pool_snap_remove(&pool, &snap).await?;
            return Ok(());
        }
        PoolCommand::Lssnap { pool } => {
            let map = connect.client()?.map().await?;
            let p = map.pool_by_name(&pool).with_context(|| format!("no pool '{pool}'"))?;
            match connect.format {
                Format::Json => print_json(&p.snaps)?,
                Format::Plain => {
                    for (id, snap) in &p.snaps.named {
                        println!("{id}\t{}\t{}", snap.name, snap.created_ms);
                    }
                    println!("{} snaps", p.snaps.named.len());
                }
            }
            return Ok(());
        }
        PoolCommand::Create {
            name,
            kind,
            size,
            min_size,
            k,
            m,
            profile,
            pg_num,
            rule,
            failure_domain,
            class,
        } => {
            let spec = pool_spec(kind, size, k, m, profile, min_size)?;
            let new_rule = (failure_domain.is_some() || class.is_some()).then(|| NewRule {
                failure_domain: failure_domain.unwrap_or_else(|| "host".to_owned()),
                class,
            });
            Command::PoolCreate { name, spec, pg_num, rule, new_rule }
        }
        PoolCommand::Delete { name, yes_i_really_mean_it } => {
            if !yes_i_really_mean_it {
                bail!(
                    "deleting pool '{name}' destroys its data; repeat with --yes-i-really-mean-it"
                );
            }
            Command::PoolDelete { name }
        }
        PoolCommand::Set { name, field, value } => {
            let field = pool_field(&field, value)?;
            Command::PoolSet { name, field }
        }
    };
    change(connect, command).await
}

/// What `pool create` makes, from its flags: replicated (`--size`), or erasure-coded
/// (`--k` and `--m`, or `--profile`).
fn pool_spec(
    kind: PoolType,
    size: Option<u8>,
    k: Option<u8>,
    m: Option<u8>,
    profile: Option<String>,
    min_size: Option<u8>,
) -> Result<PoolSpec> {
    Ok(match (kind, size, k, m, profile) {
        (PoolType::Replicated, size, None, None, None) => {
            PoolSpec::Replicated { size: size.unwrap_or(3), min_size }
        }
        (PoolType::Erasure, None, Some(k), Some(m), None) => PoolSpec::Erasure { k, m, min_size },
        (PoolType::Erasure, None, None, None, Some(profile)) => {
            PoolSpec::ErasureProfile { profile, min_size }
        }
        (PoolType::Replicated, ..) => bail!("--k, --m and --profile are for erasure pools"),
        (PoolType::Erasure, ..) => {
            bail!("an erasure pool needs --k and --m, or --profile (and no --size)")
        }
    })
}

/// The setting `pool set NAME FIELD VALUE` changes.
fn pool_field(field: &str, value: String) -> Result<PoolField> {
    let number = |v: &str| v.parse::<u32>().with_context(|| format!("'{v}' is not a number"));
    let small =
        |v: &str| v.parse::<u8>().with_context(|| format!("'{v}' is not a number up to 255"));
    Ok(match field {
        "size" => PoolField::Size(small(&value)?),
        "min_size" => PoolField::MinSize(small(&value)?),
        "pg_num" => PoolField::PgNum(number(&value)?),
        "pgp_num" => PoolField::PgpNum(number(&value)?),
        "rule" | "crush_rule" => PoolField::Rule(value),
        other => bail!("'{other}' is not a pool setting (size, min_size, pg_num, pgp_num, rule)"),
    })
}

pub async fn rule(connect: &Connect, command: RuleCommand) -> Result<()> {
    let command = match command {
        RuleCommand::Ls => {
            let map = connect.client()?.map().await?;
            let crush = map.crush();
            match connect.format {
                Format::Json => print_json(&crush.rules.values().collect::<Vec<_>>())?,
                Format::Plain => {
                    for rule in crush.rules.values() {
                        let steps: Vec<String> =
                            rule.steps.iter().map(|s| crush.step_text(s)).collect();
                        println!(
                            "{} {} ({}): {}",
                            rule.id,
                            rule.name,
                            rule.kind.name(),
                            steps.join("; ")
                        );
                    }
                }
            }
            return Ok(());
        }
        RuleCommand::Create { name, kind, root, failure_domain, class } => {
            let kind = match kind {
                PoolType::Replicated => RuleKind::Replicated,
                PoolType::Erasure => RuleKind::Erasure,
            };
            Command::RuleCreate { name, kind, root, failure_domain, class }
        }
        RuleCommand::Rm { name } => Command::RuleRemove { name },
    };
    change(connect, command).await
}
