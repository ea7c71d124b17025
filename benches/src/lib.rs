//! raftmq-benches: a load generator that drives any MQTT 3.1.1 broker over raw TCP.
//!
//! - `cli`: flags, scenarios and their default parameters.
//! - `client`: a bare MQTT client on mqttbytes: batched writes, one big read buffer.
//! - `payload`: the header (publisher, sequence, send time) every message carries.
//! - `flow`: the closed loop between publishers and their slowest subscriber.
//! - `publisher` / `subscriber`: the two client roles of a publish/subscribe run.
//! - `tracker`: which sequence numbers arrived; loss, duplicates, reordering.
//! - `pubsub`: the publish/subscribe scenarios end to end.
//! - `connections`: the idle-connections scenarios (`connections`, `idle`).
//! - `failover`: `loadgen failover`, the time a cluster takes to serve a killed node's
//!   persistent subscribers again (its own flags).
//! - `procfs`: broker RSS, our CPU time and fd limit from /proc.
//! - `report`: the JSON line and the stderr table.

pub mod cli;
pub mod client;
pub mod connections;
pub mod failover;
pub mod flow;
pub mod payload;
pub mod procfs;
pub mod publisher;
pub mod pubsub;
pub mod report;
pub mod sessions;
pub mod subscriber;
pub mod tracker;

use std::net::SocketAddr;

use anyhow::Context;

pub use cli::{Cli, Params, Scenario};
pub use report::Report;

/// Runs the scenario `cli` asks for. Never fails: a failure is the report's `error`.
pub async fn run(cli: &Cli) -> Report {
    let params = Params::resolve(cli);
    let label = cli.label.clone().unwrap_or_else(|| cli.brokers.join(","));
    let mut report = Report::new(&params, label);
    if let Err(e) = run_scenario(&params, cli, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    report
}

async fn run_scenario(params: &Params, cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let brokers = resolve(&cli.brokers).await?;
    if let Some(ca) = &cli.tls_ca {
        let name = match &cli.tls_server_name {
            Some(name) => name.clone(),
            None => host_of(&cli.brokers[0]),
        };
        client::use_tls(ca, &name)?;
    }
    // Started before any client connects: its first reading is the idle footprint.
    let rss = cli.broker_pid.map(procfs::RssSampler::start).transpose()?;
    let result = match params.scenario {
        Scenario::Connections | Scenario::Idle => {
            connections::run(params, &brokers, rss.as_ref(), report).await
        }
        _ => pubsub::run(params, &brokers, report).await,
    };
    report.broker_rss_kib = rss.map(procfs::RssSampler::finish);
    result
}

/// The host part of HOST:PORT or [V6]:PORT, without brackets.
fn host_of(broker: &str) -> String {
    let host = broker.rsplit_once(':').map_or(broker, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

pub(crate) async fn resolve(brokers: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(brokers.len());
    for broker in brokers {
        let mut found = tokio::net::lookup_host(broker.as_str())
            .await
            .with_context(|| format!("resolve --broker {broker}"))?;
        addrs.push(
            found
                .next()
                .with_context(|| format!("no address for {broker}"))?,
        );
    }
    Ok(addrs)
}
