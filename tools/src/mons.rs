//! `cairn mon ...` and `cairn bootstrap`: the monitors, the quorum, and a new cluster's
//! files for monitors on several hosts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use proto::{Command, CommandOutput, EntityName};

use crate::Format;
use crate::connect::{Connect, change};
use crate::map::print_json;

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
    let (genesis, ca_key) = match client.request(&proto::MonRequest::GetGenesis).await? {
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
    let credentials = net::identity::Credentials { entity, ca_pem, cert_pem, key_pem };
    credentials.save(dir)?;
    std::fs::write(dir.join(monitor::daemon::GENESIS_FILE), &genesis)?;
    if let Some(key) = ca_key {
        net::identity::write_private(&dir.join("ca.key"), key.as_bytes())?;
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
