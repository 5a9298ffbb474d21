//! Talking to the cluster: the options every cluster command takes (`Connect`), and
//! running a monitor command and reporting the change it made.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use client::{ClientConfig, MonClient};
use proto::{Command, CommandOutput};

use crate::Format;
use crate::map::print_json;

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

pub(crate) fn output_epoch(output: &CommandOutput) -> String {
    match output {
        CommandOutput::Epoch(epoch) => format!("done (map epoch {epoch})"),
        CommandOutput::OsdCreated { osd, epoch } => {
            format!("created osd.{osd} (map epoch {epoch})")
        }
        _ => "done".into(),
    }
}

pub(crate) async fn run_command(connect: &Connect, command: Command) -> Result<CommandOutput> {
    let client = connect.client()?;
    let output = client.command(command).await?;
    Ok(output)
}

/// Runs a change and reports it.
pub(crate) async fn change(connect: &Connect, command: Command) -> Result<()> {
    let output = run_command(connect, command).await?;
    match connect.format {
        Format::Plain => println!("{}", output_epoch(&output)),
        Format::Json => print_json(&output)?,
    }
    Ok(())
}
