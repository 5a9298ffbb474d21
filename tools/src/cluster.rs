//! The administrative commands: what `ceph -s`, `ceph osd ...`, `ceph osd pool ...` and
//! friends do, against a running cluster through its monitors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use client::{ClientConfig, MonClient};
use placement::pool::STRIPE_UNIT_BYTES_DEFAULT;
use placement::{ErasureProfile, MapFlag, OsdMap, PoolKind, RuleKind};
use proto::message::{NewRule, PoolField, PoolSpec, Severity, StatusReport};
use proto::{Command, CommandOutput, EntityName};

use crate::Format;
use crate::map::print_json;
use crate::map_render;

/// Options every cluster command takes.
#[derive(Args, Clone, Debug)]
pub struct Connect {
    /// The client configuration (default: $CAIRN_CONF, ./cairn-data/client.toml,
    /// ~/.config/cairn/client.toml).
    #[arg(long, global = true)]
    pub conf: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t, global = true)]
    pub format: Format,
    /// Seconds a request may take, retries on other monitors included.
    #[arg(long, default_value_t = 15, global = true)]
    pub timeout: u64,
}

impl Connect {
    pub fn client(&self) -> Result<MonClient> {
        let config = ClientConfig::find(self.conf.as_deref())?;
        let mut client = MonClient::connect(config)?;
        client.timeout = std::time::Duration::from_secs(self.timeout.max(1));
        Ok(client)
    }
}

#[derive(Subcommand)]
pub enum MonCommand {
    /// Run a monitor daemon from its directory.
    Run {
        #[arg(long)]
        data: PathBuf,
    },
    /// The monitors, the quorum and the leader.
    Stat,
    /// Prepare a new monitor's directory; started with `cairn mon run --data DIR`, it joins
    /// the quorum by itself.
    Add {
        name: String,
        addr: String,
        /// The new monitor's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Remove a monitor from the quorum.
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum OsdCommand {
    /// The CRUSH hierarchy with OSD states.
    Tree,
    /// OSD states and pools.
    Dump,
    /// Per OSD: space used and free, PGs held.
    Df,
    /// A new OSD id (lowest free unless given); it is down and out until it boots. With
    /// `--data`, also prepares its directory (identity, config, empty store) and places it
    /// in CRUSH under `--host`.
    Create {
        #[arg(long)]
        id: Option<u32>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where it will serve (`ip:port`). Port 0 (the default) picks a free one at each
        /// start; the OSD boots with it, so clients and peers find it in the map.
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
        /// The CRUSH host bucket it goes under (created if missing).
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        /// The space it may fill (`64G`, `512M`): without it, the filesystem of `--data`.
        #[arg(long, value_parser = crate::bench::parse_bytes)]
        capacity: Option<u64>,
    },
    /// Runs the OSD prepared in a directory.
    Run {
        #[arg(long)]
        data: PathBuf,
    },
    /// A stopped OSD's store, offline: list, dump, get, corrupt.
    StoreTool {
        #[arg(long)]
        data: PathBuf,
        #[command(subcommand)]
        command: crate::store_tool::StoreToolCommand,
    },
    /// Remove OSDs that are down.
    Rm { osd: u32 },
    /// Mark OSDs in: they take data again.
    In { osds: Vec<u32> },
    /// Mark OSDs out: their data moves elsewhere.
    Out { osds: Vec<u32> },
    /// Mark OSDs down (a running OSD marks itself up again by booting).
    Down { osds: Vec<u32> },
    /// Reweight an OSD (0.0 to 1.0): it keeps that share of what CRUSH gives it.
    Reweight { osd: u32, reweight: f64 },
    /// Set (or with no class, clear) an OSD's device class.
    SetClass { osd: u32, class: Option<String> },
    /// Set a cluster flag (noout, noin, noup, nodown, pause, noscrub, nodeepscrub, ...).
    Set { flag: MapFlag },
    /// Clear a cluster flag.
    Unset { flag: MapFlag },
    /// Named erasure-code profiles: set, ls, get, rm.
    ErasureCodeProfile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Place an OSD in CRUSH: `cairn osd crush-set 3 1.0 root=default host=node1`.
    CrushSet {
        osd: u32,
        weight: f64,
        /// TYPE=NAME pairs from the top; missing buckets are created.
        location: Vec<String>,
        #[arg(long)]
        class: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// A profile erasure-coded pools can be created from (`pool create P erasure
    /// --profile NAME`).
    Set {
        name: String,
        #[arg(long)]
        k: u8,
        #[arg(long)]
        m: u8,
        /// Bytes of each data chunk of a stripe: a power of two, 512 to 1 MiB.
        #[arg(long, default_value_t = STRIPE_UNIT_BYTES_DEFAULT)]
        stripe_unit: u32,
        /// Its pools get a rule of their own with shards on distinct buckets of this type.
        #[arg(long)]
        failure_domain: Option<String>,
        /// Its pools get a rule of their own on OSDs of this device class.
        #[arg(long)]
        class: Option<String>,
    },
    /// The profiles with their settings.
    Ls,
    /// One profile's settings.
    Get { name: String },
    /// Remove a profile no pool uses.
    Rm { name: String },
}

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

#[derive(Subcommand)]
pub enum AuthCommand {
    /// A new identity; its key and certificate are written to --out (shown once).
    Add {
        entity: EntityName,
        #[arg(long, default_value = "allow r")]
        mon_caps: String,
        #[arg(long, default_value = "")]
        osd_caps: String,
        /// Where to write ca.crt, ENTITY.crt and ENTITY.key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke an identity: its certificate is refused from now on.
    Rm { entity: EntityName },
    /// The identities with their capabilities and certificate fingerprints.
    Ls,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Change a cluster setting (e.g. mon.down_out_interval 600).
    Set { key: String, value: String },
}

fn output_epoch(output: &CommandOutput) -> String {
    match output {
        CommandOutput::Epoch(epoch) => format!("done (map epoch {epoch})"),
        CommandOutput::OsdCreated { osd, epoch } => {
            format!("created osd.{osd} (map epoch {epoch})")
        }
        _ => "done".into(),
    }
}

async fn run_command(connect: &Connect, command: Command) -> Result<CommandOutput> {
    let client = connect.client()?;
    let output = client.command(command).await?;
    Ok(output)
}

/// Runs a change and reports it.
async fn change(connect: &Connect, command: Command) -> Result<()> {
    let output = run_command(connect, command).await?;
    match connect.format {
        Format::Plain => println!("{}", output_epoch(&output)),
        Format::Json => print_json(&output)?,
    }
    Ok(())
}

pub async fn status(connect: &Connect) -> Result<()> {
    let status = connect.client()?.status().await?;
    match connect.format {
        Format::Plain => print!("{}", render_status(&status)),
        Format::Json => print_json(&status)?,
    }
    Ok(())
}

pub fn render_status(s: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ =
        writeln!(out, "  cluster:\n    id:     {}\n    health: {}", s.fsid, s.health.health_name());
    for check in &s.checks {
        let _ = writeln!(out, "            {}", check.summary);
    }
    let quorum: Vec<&str> =
        s.monitors.iter().filter(|m| m.in_quorum).map(|m| m.name.as_str()).collect();
    let leader = s.leader.as_deref().map_or("none".to_owned(), |l| format!("mon.{l}"));
    let _ = writeln!(
        out,
        "\n  services:\n    mon: {} daemons, quorum {} (leader {leader}, term {})",
        s.monitors.len(),
        if quorum.is_empty() { "none".into() } else { quorum.join(",") },
        s.term
    );
    let _ = writeln!(out, "    osd: {} osds: {} up, {} in", s.osds.total, s.osds.up, s.osds.r#in);
    let flags =
        if s.flags.is_empty() { String::new() } else { format!("; flags {}", s.flags.join(",")) };
    let _ = writeln!(
        out,
        "\n  data:\n    pools:   {} pools, {} pgs\n    map:     epoch {}{flags}",
        s.pools, s.pgs, s.epoch
    );
    let pgs = &s.pg_summary;
    if pgs.pgs > 0 {
        let _ = writeln!(
            out,
            "    objects: {} objects, {}\n    pgs:     {}",
            pgs.objects,
            crate::pg::bytes(pgs.bytes),
            crate::pg::states(pgs)
        );
        for line in crate::pg::progress(pgs) {
            let _ = writeln!(out, "             {line}");
        }
    }
    out
}

pub async fn health(connect: &Connect, detail: bool) -> Result<()> {
    let status = connect.client()?.status().await?;
    match connect.format {
        Format::Json => print_json(
            &serde_json::json!({ "status": status.health.health_name(), "checks": status.checks }),
        )?,
        Format::Plain => {
            let summaries: Vec<&str> = status.checks.iter().map(|c| c.summary.as_str()).collect();
            if summaries.is_empty() {
                println!("{}", status.health.health_name());
            } else {
                println!("{} {}", status.health.health_name(), summaries.join("; "));
            }
            if detail {
                for check in &status.checks {
                    let tag = match check.severity {
                        Severity::Err => "ERR",
                        Severity::Warn => "WRN",
                        Severity::Ok => "OK",
                    };
                    println!("[{tag}] {}: {}", check.code, check.summary);
                    for line in &check.detail {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    Ok(())
}

pub async fn mon(connect: &Connect, command: MonCommand) -> Result<()> {
    match command {
        MonCommand::Run { data } => monitor::daemon::run(&data).await,
        MonCommand::Stat => {
            let status = connect.client()?.status().await?;
            match connect.format {
                Format::Json => print_json(&status.monitors)?,
                Format::Plain => {
                    let quorum: Vec<&str> = status
                        .monitors
                        .iter()
                        .filter(|m| m.in_quorum)
                        .map(|m| m.name.as_str())
                        .collect();
                    println!(
                        "{} monitors, quorum {} (term {}, answered by mon.{})",
                        status.monitors.len(),
                        quorum.join(","),
                        status.term,
                        status.answered_by
                    );
                    for m in &status.monitors {
                        let role = if m.leader {
                            "leader"
                        } else if m.in_quorum {
                            "peon"
                        } else {
                            "out of quorum"
                        };
                        let offset = m.clock_offset_ms.map_or("-".into(), |o| format!("{o:+} ms"));
                        println!("  mon.{:<8} {:<22} {:<14} clock {offset}", m.name, m.addr, role);
                    }
                }
            }
            Ok(())
        }
        MonCommand::Add { name, addr, dir } => mon_add(connect, &name, &addr, &dir).await,
        MonCommand::Rm { name } => change(connect, Command::MonRemove { name }).await,
    }
}

/// Writes a new monitor's directory: its identity (issued by the cluster), the genesis
/// file and the CA key (from the monitors), and a `mon.toml` that tells it whom to join.
async fn mon_add(connect: &Connect, name: &str, addr: &str, dir: &Path) -> Result<()> {
    let entity = EntityName::mon(name).map_err(anyhow::Error::msg)?;
    addr.parse::<std::net::SocketAddr>().with_context(|| format!("'{addr}' is not IP:PORT"))?;
    if dir.join(monitor::daemon::CONFIG_FILE).exists() {
        bail!("{} already holds a monitor", dir.display());
    }
    // The directory must be writable before the identity is made: its key is shown once.
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let client = connect.client()?;
    let status = client.status().await?;
    let join: Vec<String> =
        status.monitors.iter().map(|m| format!("{}@{}", m.name, m.addr)).collect();
    let (genesis, ca_key) = match client.request(&proto::Request::GetGenesis).await? {
        (proto::Response::Genesis { ca_key_pem }, bulk) => (bulk, ca_key_pem),
        (other, _) => bail!("unexpected answer '{}' to get genesis", other.name()),
    };
    // A fresh node id: above every current monitor's and every initial one's (a removed
    // initial monitor's id, reused, would make the newcomer initialise the old quorum).
    let initial = monitor::daemon::GenesisFile::decode(&genesis)?;
    let id = status
        .monitors
        .iter()
        .map(|m| m.id)
        .chain(initial.members.keys().copied())
        .max()
        .unwrap_or(0)
        + 1;
    let identity = Command::AuthAdd {
        entity: entity.clone(),
        mon_caps: "allow *".into(),
        osd_caps: "allow *".into(),
    };
    let CommandOutput::Identity { entity, ca_pem, cert_pem, key_pem } =
        client.command(identity).await?
    else {
        bail!("the monitors did not return the new identity");
    };
    let credentials = proto::identity::Credentials { entity, ca_pem, cert_pem, key_pem };
    credentials.save(dir)?;
    std::fs::write(dir.join(monitor::daemon::GENESIS_FILE), &genesis)?;
    if let Some(key) = ca_key {
        proto::identity::write_private(&dir.join("ca.key"), key.as_bytes())?;
    }
    let config = monitor::daemon::MonConfig {
        name: name.to_owned(),
        id,
        addr: addr.to_owned(),
        raft: Default::default(),
        join,
    };
    config.save(dir)?;
    println!("prepared mon.{name} (node {id}) in {}", dir.display());
    println!(
        "start it with: cairn mon run --data {}    (it joins the quorum by itself)",
        dir.display()
    );
    Ok(())
}

pub async fn osd(connect: &Connect, command: OsdCommand) -> Result<()> {
    let command = match command {
        OsdCommand::Tree => {
            let map = connect.client()?.map().await?;
            match connect.format {
                Format::Json => print_json(&map.contents().crush)?,
                Format::Plain => print!("{}", map_render::tree(&map)),
            }
            return Ok(());
        }
        OsdCommand::Dump => {
            let map = connect.client()?.map().await?;
            match connect.format {
                Format::Json => print_json(&map)?,
                Format::Plain => print!("{}", dump(&map)),
            }
            return Ok(());
        }
        OsdCommand::Df => return crate::pg::osd_df(connect).await,
        OsdCommand::Create { id, data: Some(dir), addr, host, weight, capacity } => {
            return osd_prepare(connect, id, &dir, &addr, host, weight, capacity).await;
        }
        OsdCommand::Create { id, data: None, .. } => Command::OsdCreate { id },
        OsdCommand::Run { data } => return osd::daemon::run(&data).await,
        OsdCommand::StoreTool { data, command } => {
            return crate::store_tool::run(&data, connect.format, command);
        }
        OsdCommand::Rm { osd } => Command::OsdRemove { osd },
        OsdCommand::In { osds } => Command::OsdIn { osds },
        OsdCommand::Out { osds } => Command::OsdOut { osds },
        OsdCommand::Down { osds } => Command::OsdDown { osds },
        OsdCommand::Reweight { osd, reweight } => Command::OsdReweight { osd, reweight },
        OsdCommand::SetClass { osd, class } => Command::OsdSetClass { osd, class },
        OsdCommand::Set { flag } => Command::SetFlag { flag },
        OsdCommand::Unset { flag } => Command::ClearFlag { flag },
        OsdCommand::ErasureCodeProfile { command } => match command {
            ProfileCommand::Set { name, k, m, stripe_unit, failure_domain, class } => {
                let mut profile = ErasureProfile::new(k, m, stripe_unit);
                (profile.failure_domain, profile.class) = (failure_domain, class);
                Command::ProfileSet { name, profile }
            }
            ProfileCommand::Rm { name } => Command::ProfileRemove { name },
            ProfileCommand::Ls | ProfileCommand::Get { .. } => {
                let map = connect.client()?.map().await?;
                let profiles = &map.contents().erasure_profiles;
                let shown: Vec<(&String, &ErasureProfile)> = match &command {
                    ProfileCommand::Get { name } => {
                        let profile = profiles
                            .get(name)
                            .with_context(|| format!("no erasure-code profile '{name}'"))?;
                        vec![(name, profile)]
                    }
                    _ => profiles.iter().collect(),
                };
                match connect.format {
                    Format::Json => print_json(&shown.into_iter().collect::<BTreeMap<_, _>>())?,
                    Format::Plain => {
                        for (name, p) in shown {
                            let mut line = format!(
                                "{name}: k={} m={} stripe_unit={}",
                                p.k, p.m, p.stripe_unit_bytes
                            );
                            if let Some(fd) = &p.failure_domain {
                                line += &format!(" failure_domain={fd}");
                            }
                            if let Some(class) = &p.class {
                                line += &format!(" class={class}");
                            }
                            println!("{line}");
                        }
                    }
                }
                return Ok(());
            }
        },
        OsdCommand::CrushSet { osd, weight, location, class } => {
            let mut pairs = BTreeMap::new();
            for pair in location {
                let (t, n) =
                    pair.split_once('=').with_context(|| format!("'{pair}' is not TYPE=NAME"))?;
                pairs.insert(t.to_owned(), n.to_owned());
            }
            Command::CrushSetOsd { osd, weight, location: pairs, class }
        }
    };
    change(connect, command).await
}

fn dump(map: &OsdMap) -> String {
    use std::fmt::Write as _;
    let c = map.contents();
    let mut out =
        format!("epoch {}\nfsid {}\n", map.epoch(), placement::describe::format_uuid(&c.fsid));
    let flags: Vec<&str> = c.flags.iter().map(|f| f.name()).collect();
    let _ =
        writeln!(out, "flags {}", if flags.is_empty() { "none".into() } else { flags.join(",") });
    for pool in c.pools.values() {
        let kind = match &pool.kind {
            PoolKind::Replicated { size, min_size } => {
                format!("replicated size {size} min_size {min_size}")
            }
            PoolKind::Erasure { k, m, min_size, .. } => {
                format!("erasure k {k} m {m} min_size {min_size}")
            }
        };
        let _ = writeln!(
            out,
            "pool {} '{}' {kind} rule {} pg_num {} pgp_num {}",
            pool.id, pool.name, pool.rule, pool.pg_num, pool.pgp_num
        );
    }
    for (osd, state) in &c.osds {
        let _ = writeln!(
            out,
            "{osd} {} {} weight {} reweight {} addr {}",
            if state.up { "up" } else { "down" },
            if state.is_in { "in" } else { "out" },
            c.crush.devices.get(osd).map_or("-".into(), |d| d.weight.to_string()),
            state.reweight,
            state.addr.as_deref().unwrap_or("-")
        );
    }
    out
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
            let spec = match (kind, size, k, m, profile) {
                (PoolType::Replicated, size, None, None, None) => {
                    PoolSpec::Replicated { size: size.unwrap_or(3), min_size }
                }
                (PoolType::Erasure, None, Some(k), Some(m), None) => {
                    PoolSpec::Erasure { k, m, min_size }
                }
                (PoolType::Erasure, None, None, None, Some(profile)) => {
                    PoolSpec::ErasureProfile { profile, min_size }
                }
                (PoolType::Replicated, ..) => bail!("--k, --m and --profile are for erasure pools"),
                (PoolType::Erasure, ..) => {
                    bail!("an erasure pool needs --k and --m, or --profile (and no --size)")
                }
            };
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
            let number =
                |v: &str| v.parse::<u32>().with_context(|| format!("'{v}' is not a number"));
            let small = |v: &str| {
                v.parse::<u8>().with_context(|| format!("'{v}' is not a number up to 255"))
            };
            let field = match field.as_str() {
                "size" => PoolField::Size(small(&value)?),
                "min_size" => PoolField::MinSize(small(&value)?),
                "pg_num" => PoolField::PgNum(number(&value)?),
                "pgp_num" => PoolField::PgpNum(number(&value)?),
                "rule" | "crush_rule" => PoolField::Rule(value),
                other => {
                    bail!("'{other}' is not a pool setting (size, min_size, pg_num, pgp_num, rule)")
                }
            };
            Command::PoolSet { name, field }
        }
    };
    change(connect, command).await
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

pub async fn auth(connect: &Connect, command: AuthCommand) -> Result<()> {
    match command {
        AuthCommand::Add { entity, mon_caps, osd_caps, out } => {
            proto::Caps::parse(&mon_caps, &osd_caps).map_err(anyhow::Error::msg)?;
            let output = run_command(
                connect,
                Command::AuthAdd { entity: entity.clone(), mon_caps, osd_caps },
            )
            .await?;
            let CommandOutput::Identity { entity, ca_pem, cert_pem, key_pem } = output else {
                bail!("the monitors did not return the new identity");
            };
            let credentials = proto::identity::Credentials { entity, ca_pem, cert_pem, key_pem };
            credentials
                .save(&out)
                .with_context(|| format!("save the identity in {}", out.display()))?;
            println!("added {}; key and certificate in {}", credentials.entity, out.display());
            Ok(())
        }
        AuthCommand::Rm { entity } => change(connect, Command::AuthRemove { entity }).await,
        AuthCommand::Ls => {
            let output = run_command(connect, Command::AuthList).await?;
            let CommandOutput::Identities(identities) = output else { bail!("unexpected answer") };
            match connect.format {
                Format::Json => print_json(&identities)?,
                Format::Plain => {
                    for id in identities {
                        println!("{}\t{}\tcert {}", id.entity, id.caps, id.fingerprint);
                    }
                }
            }
            Ok(())
        }
    }
}

pub async fn config(connect: &Connect, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Set { key, value } => {
            change(connect, Command::ConfigSet { key, value }).await
        }
    }
}

/// `cairn bootstrap`: a new cluster's files, for monitors on several hosts.
pub fn bootstrap(dir: &Path, mons: &[String]) -> Result<()> {
    let mut parsed = Vec::new();
    for spec in mons {
        let (name, addr) =
            spec.split_once('=').with_context(|| format!("'{spec}' is not NAME=IP:PORT"))?;
        let addr = addr.parse().with_context(|| format!("'{addr}' is not IP:PORT"))?;
        parsed.push((name.to_owned(), addr));
    }
    let config = crate::dev::bootstrap(dir, &parsed)?;
    println!("cluster {} bootstrapped in {}", config.fsid, dir.display());
    for (name, _) in &parsed {
        println!(
            "  copy {}/mon.{name} to its host and run: cairn mon run --data DIR",
            dir.display()
        );
    }
    println!("  client configuration: {}/{}", dir.display(), crate::dev::CLIENT_CONFIG);
    Ok(())
}

/// `osd create --data DIR`: an id, an identity, a config and a place in CRUSH.
async fn osd_prepare(
    connect: &Connect,
    id: Option<u32>,
    dir: &std::path::Path,
    addr: &str,
    host: Option<String>,
    weight: f64,
    capacity: Option<u64>,
) -> Result<()> {
    let client = connect.client()?;
    let osd = prepare_osd(&client, id, dir, addr, host, weight, capacity).await?;
    println!(
        "prepared osd.{osd} in {}; start it with: cairn osd run --data {}",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Registers a new OSD with the monitors and prepares its directory: id, identity,
/// configuration, and a place in CRUSH (under `host`, default `host-N`). Its store is
/// made when it first runs. Returns its id.
pub async fn prepare_osd(
    client: &MonClient,
    id: Option<u32>,
    dir: &std::path::Path,
    addr: &str,
    host: Option<String>,
    weight: f64,
    capacity: Option<u64>,
) -> Result<u32> {
    if capacity == Some(0) {
        bail!("--capacity must be above 0");
    }
    addr.parse::<std::net::SocketAddr>().with_context(|| format!("'{addr}' is not ip:port"))?;
    if dir.join(osd::daemon::CONFIG_FILE).exists() {
        bail!("{} already holds an OSD", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let CommandOutput::OsdCreated { osd, .. } = client.command(Command::OsdCreate { id }).await?
    else {
        bail!("the monitors did not return the new OSD's id");
    };
    let entity: EntityName = format!("osd.{osd}").parse().map_err(anyhow::Error::msg)?;
    let identity = Command::AuthAdd {
        entity: entity.clone(),
        mon_caps: "allow r".into(),
        osd_caps: "allow *".into(),
    };
    let CommandOutput::Identity { entity, ca_pem, cert_pem, key_pem } =
        client.command(identity).await?
    else {
        bail!("the monitors did not return the new identity");
    };
    proto::identity::Credentials { entity: entity.clone(), ca_pem, cert_pem, key_pem }.save(dir)?;
    let mut config = client.config().clone();
    config.entity = entity.to_string();
    config.keyring = ".".into();
    config.path = None;
    config.save(&dir.join(osd::daemon::CLIENT_FILE))?;
    osd::daemon::OsdConfig { id: osd, addr: addr.to_owned(), capacity_bytes: capacity }
        .save(dir)?;
    let host = host.unwrap_or_else(|| format!("host-{osd}"));
    let location =
        BTreeMap::from([("root".to_owned(), "default".to_owned()), ("host".to_owned(), host)]);
    client.command(Command::CrushSetOsd { osd, weight, location, class: None }).await?;
    Ok(osd)
}
