//! `cairn osd ...`: the OSDs in the map (tree, dump, create, in/out/down, flags, erasure-
//! code profiles, CRUSH placement), and preparing a new OSD's directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use client::MonClient;
use placement::pool::STRIPE_UNIT_BYTES_DEFAULT;
use placement::{ErasureProfile, MapFlag, OsdMap, PoolKind};
use proto::{Command, CommandOutput, EntityName};

use crate::Format;
use crate::connect::{Connect, change};
use crate::map::print_json;
use crate::map_render;

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
        #[arg(long, value_parser = crate::units::parse_bytes)]
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
    /// Fenced clients, whose ops every OSD refuses: add, rm, ls.
    Blocklist {
        #[command(subcommand)]
        command: BlocklistCommand,
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
pub enum BlocklistCommand {
    /// Fence a client instance (IP:PORT/NONCE, as `obj lock info` shows a holder) or every
    /// client at an IP.
    Add {
        entry: String,
        /// Seconds until the entry lapses (default an hour).
        #[arg(long)]
        expire: Option<u64>,
    },
    /// Lift an entry.
    Rm { entry: String },
    /// The entries, with when each lapses (ms since the Unix epoch).
    Ls,
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
        OsdCommand::Blocklist { command: BlocklistCommand::Ls } => {
            let map = connect.client()?.map().await?;
            let entries = &map.contents().blocklist;
            match connect.format {
                Format::Json => print_json(entries)?,
                Format::Plain => {
                    for (entry, until_ms) in entries {
                        println!("{entry} until_ms {until_ms}");
                    }
                }
            }
            return Ok(());
        }
        OsdCommand::Blocklist { command: BlocklistCommand::Add { entry, expire } } => {
            Command::BlocklistAdd { entry, expire_secs: expire }
        }
        OsdCommand::Blocklist { command: BlocklistCommand::Rm { entry } } => {
            Command::BlocklistRemove { entry }
        }
        OsdCommand::Set { flag } => Command::SetFlag { flag },
        OsdCommand::Unset { flag } => Command::ClearFlag { flag },
        OsdCommand::ErasureCodeProfile { command } => match command {
            ProfileCommand::Set { name, k, m, stripe_unit, failure_domain, class } => {
                let mut profile = ErasureProfile::new(k, m, stripe_unit);
                (profile.failure_domain, profile.class) = (failure_domain, class);
                Command::ProfileSet { name, profile }
            }
            ProfileCommand::Rm { name } => Command::ProfileRemove { name },
            ProfileCommand::Ls => return show_profiles(connect, None).await,
            ProfileCommand::Get { name } => return show_profiles(connect, Some(&name)).await,
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

/// `osd erasure-code-profile ls` (every profile) and `get NAME` (that one).
async fn show_profiles(connect: &Connect, name: Option<&String>) -> Result<()> {
    let map = connect.client()?.map().await?;
    let profiles = &map.contents().erasure_profiles;
    let shown: Vec<(&String, &ErasureProfile)> = match name {
        Some(name) => {
            let profile =
                profiles.get(name).with_context(|| format!("no erasure-code profile '{name}'"))?;
            vec![(name, profile)]
        }
        None => profiles.iter().collect(),
    };
    if connect.format == Format::Json {
        return print_json(&shown.into_iter().collect::<BTreeMap<_, _>>());
    }
    for (name, p) in shown {
        let mut line = format!("{name}: k={} m={} stripe_unit={}", p.k, p.m, p.stripe_unit_bytes);
        if let Some(fd) = &p.failure_domain {
            line += &format!(" failure_domain={fd}");
        }
        if let Some(class) = &p.class {
            line += &format!(" class={class}");
        }
        println!("{line}");
    }
    Ok(())
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
    net::identity::Credentials { entity: entity.clone(), ca_pem, cert_pem, key_pem }.save(dir)?;
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
