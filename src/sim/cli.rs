//! `modemgate simulate`: N simulated modems on ptys plus the control API, until SIGINT/SIGTERM.
//!
//! Prints one device path per modem (the `--dir` link when given, else the pty), then
//! `control http://ADDR`, one per line, and flushes, so a script can read exactly N+1 lines.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Profile, SimConfig, SimError, SimHandle, spawn};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// How many modems to simulate.
    #[arg(long, default_value_t = 1)]
    pub modems: usize,
    /// Directory for stable links DIR/modem0, DIR/modem1, ... that follow each modem's current pty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds from Ctrl-Z to +CMGS (plus up to --send-jitter).
    #[arg(long, default_value_t = 2.0)]
    pub send_delay: f64,
    /// Extra random seconds per send; defaults to --send-delay (so 2-4 s by default).
    #[arg(long)]
    pub send_jitter: Option<f64>,
    /// Dialect(s): plain, ec25, sim7600, huawei; a comma-separated list is used round-robin.
    #[arg(long, value_delimiter = ',', default_value = "plain")]
    pub profile: Vec<Profile>,
    /// Seconds from +CMGS to the status report of a send that asked for one.
    #[arg(long, default_value_t = 5.0)]
    pub report_delay: f64,
    /// Recipients whose status reports say "failed" (comma-separated, as `+15551234567`).
    #[arg(long, value_delimiter = ',')]
    pub undeliverable: Vec<String>,
    /// SIM PIN for every modem (none by default).
    #[arg(long)]
    pub pin: Option<String>,
    /// Address of the HTTP control API.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("simulate: {0}: {1}")]
    Arg(&'static str, String),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("simulate: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Io { what, source }
}

fn seconds(name: &'static str, value: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(value).map_err(|e| CliError::Arg(name, e.to_string()))
}

/// Run the simulator until interrupted.
pub async fn run(args: SimulateArgs) -> Result<(), CliError> {
    let send_delay = seconds("--send-delay", args.send_delay)?;
    let send_jitter = seconds("--send-jitter", args.send_jitter.unwrap_or(args.send_delay))?;
    let report_delay = seconds("--report-delay", args.report_delay)?;
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let mut sims = Vec::with_capacity(args.modems);
    for i in 0..args.modems {
        let profile = *args
            .profile
            .get(i % args.profile.len().max(1))
            .unwrap_or(&Profile::Plain);
        let mut config = SimConfig::new(profile).numbered(i + 1);
        config.link = args.dir.as_ref().map(|d| d.join(format!("modem{i}")));
        config.pin = args.pin.clone();
        config.send_delay = send_delay;
        config.send_jitter = send_jitter;
        config.report_delay = report_delay;
        config.undeliverable = args.undeliverable.clone();
        sims.push(spawn(config)?);
    }
    let sims: Arc<Vec<SimHandle>> = Arc::new(sims);
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .map_err(io(format!("binding the control API on {}", args.control)))?;
    let addr = listener
        .local_addr()
        .map_err(io("reading the control address"))?;
    let interrupted = interrupted()?;
    {
        let mut stdout = std::io::stdout().lock();
        for sim in sims.iter() {
            writeln!(stdout, "{}", sim.device().display()).map_err(io("writing stdout"))?;
        }
        writeln!(stdout, "control http://{addr}").map_err(io("writing stdout"))?;
        stdout.flush().map_err(io("writing stdout"))?;
    }
    let app = super::control::router(sims.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(interrupted)
        .await
        .map_err(io("serving the control API"))?;
    for sim in sims.iter() {
        sim.shutdown().await;
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT. The handlers are installed when this is called, not when the future is
/// first polled: it is called before the paths are printed, so a supervisor (or a test) that signals as
/// soon as it has read them stops the simulator cleanly, its links removed, rather than killing it.
fn interrupted() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(io("listening for SIGTERM"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io("listening for SIGINT"))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
