//! `cairn auth ...` and `cairn config ...`: identities with their capabilities, and the
//! cluster's runtime settings.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use proto::{Command, CommandOutput, EntityName};

use crate::Format;
use crate::connect::{Connect, change, run_command};
use crate::map::print_json;

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
            let credentials = net::identity::Credentials { entity, ca_pem, cert_pem, key_pem };
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
