//! The task that owns one simulated modem: its pty, its [`Engine`], its timers. Everything else talks to
//! it through [`Control`] messages and reads what it publishes on watch channels.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::engine::{Engine, LoggedSend, Out, Timer};
use super::fault::Faults;
use super::pty::{Pty, point_link};
use super::{Inbound, SimError};

/// How often the actor clears the exclusive lock and, while hung, checks whether the port was re-opened.
const LINE_CHECK: Duration = Duration::from_millis(100);
/// Output kept for a DTE that is not reading (beyond what the pty itself buffers). A modem without flow
/// control drops what nobody reads; so do we, oldest first, so a day of noise on an unopened port stays small.
const MAX_PENDING_OUT: usize = 64 * 1024;

pub(crate) enum Control {
    Inject(Inbound, oneshot::Sender<Result<usize, SimError>>),
    SetFaults(Faults),
    Vanish(Duration),
    /// Restart in place, the port kept open (a UART modem's brown-out).
    Reboot,
    Garbage(Vec<u8>),
    Shutdown,
}

/// What the actor publishes for [`super::SimHandle`].
pub(crate) struct Published {
    pub path: watch::Sender<PathBuf>,
    pub sends: watch::Sender<Vec<LoggedSend>>,
    /// Sends begun (the PDU taken), finished or not.
    pub started: watch::Sender<usize>,
    pub faults: watch::Sender<Faults>,
}

pub(crate) struct Actor {
    pub engine: Engine,
    pub pty: Option<Pty>,
    pub link: Option<PathBuf>,
    pub noise_interval: Option<Duration>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub published: Published,
}

impl Actor {
    pub async fn run(mut self) {
        let mut pending_out = Vec::new();
        let mut boot = Out::default();
        self.engine.boot(&mut boot);
        pending_out.extend(boot.bytes);
        let mut timers: JoinSet<Timer> = JoinSet::new();
        let mut back_at: Option<Instant> = None;
        let mut line_check = tokio::time::interval(LINE_CHECK);
        line_check.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut noise = self.noise_interval.map(|every| {
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(MissedTickBehavior::Skip);
            i
        });
        let mut buf = [0u8; 1024];
        loop {
            let mut out = Out::default();
            tokio::select! {
                msg = self.control.recv() => match msg {
                    None | Some(Control::Shutdown) => break,
                    Some(Control::Inject(inbound, reply)) => {
                        let _ = reply.send(self.engine.inject(&inbound, &mut out));
                    }
                    Some(Control::SetFaults(faults)) => {
                        let arm = faults.hang && !self.engine.faults.hang;
                        self.engine.set_faults(faults, &mut out);
                        if let (true, Some(pty)) = (arm, &self.pty)
                            && let Err(e) = pty.arm_reopen_detector()
                        {
                            tracing::warn!(error = %e, "simulator cannot arm its re-open detector");
                        }
                    }
                    Some(Control::Vanish(away)) => {
                        self.vanish();
                        pending_out.clear();
                        back_at = Some(Instant::now() + away);
                    }
                    Some(Control::Reboot) => {
                        pending_out.clear();
                        self.engine.boot(&mut out);
                    }
                    Some(Control::Garbage(bytes)) => {
                        if !self.engine.faults.hang {
                            pending_out.extend(bytes);
                        }
                    }
                },
                read = read_pty(&self.pty, &mut buf) => match read {
                    Ok(n) => self.engine.feed(buf.get(..n).unwrap_or_default(), &mut out),
                    Err(e) => {
                        tracing::warn!(error = %e, "simulated modem lost its pty; recreating it");
                        self.vanish();
                        pending_out.clear();
                        back_at = Some(Instant::now());
                    }
                },
                written = write_pty(&self.pty, &pending_out), if !pending_out.is_empty() => match written {
                    Ok(n) => {
                        pending_out.drain(..n.min(pending_out.len()));
                    }
                    Err(e) => tracing::warn!(error = %e, "simulated modem cannot write to its pty"),
                },
                Some(Ok(timer)) = timers.join_next(), if !timers.is_empty() => {
                    self.engine.fire(timer, &mut out);
                }
                _ = line_check.tick() => self.check_line(),
                _ = tick(&mut noise) => self.engine.noise(&mut out),
                _ = sleep_until(back_at), if back_at.is_some() => {
                    back_at = None;
                    match self.come_back() {
                        Ok(()) => self.engine.boot(&mut out),
                        Err(e) => {
                            tracing::warn!(error = %e, "simulated modem cannot create a pty; retrying");
                            back_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
            }
            if self.pty.is_some() {
                pending_out.extend(out.bytes);
                let excess = pending_out.len().saturating_sub(MAX_PENDING_OUT);
                pending_out.drain(..excess);
            }
            for (delay, timer) in out.timers {
                timers.spawn(async move {
                    tokio::time::sleep(delay).await;
                    timer
                });
            }
            if out.started > 0 {
                self.published.started.send_modify(|n| *n += out.started);
            }
            if !out.sends.is_empty() {
                self.published
                    .sends
                    .send_modify(|log| log.extend(out.sends));
            }
            let faults = &self.engine.faults;
            self.published.faults.send_if_modified(|published| {
                let changed = published != faults;
                if changed {
                    *published = faults.clone();
                }
                changed
            });
        }
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }

    /// Close the pty (the DTE's port hangs up) and remove the stable name, as a USB reset does.
    fn vanish(&mut self) {
        self.pty = None;
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }

    /// A fresh pty (a new `/dev/pts/N`), the stable name pointed at it, the new path published.
    fn come_back(&mut self) -> std::io::Result<()> {
        let pty = Pty::open()?;
        if let Some(link) = &self.link {
            point_link(link, pty.path())?;
        }
        self.published.path.send_replace(pty.path().to_owned());
        self.pty = Some(pty);
        Ok(())
    }

    fn check_line(&mut self) {
        let Some(pty) = &self.pty else { return };
        if let Err(e) = pty.clear_exclusive() {
            tracing::debug!(error = %e, "simulator cannot clear the exclusive lock");
        }
        if self.engine.faults.hang && pty.reopened().unwrap_or(false) {
            // What was written into the hung modem before the re-open is lost, whenever this loop would
            // have read it.
            if let Err(e) = pty.discard_input() {
                tracing::debug!(error = %e, "simulator cannot discard the hung line's input");
            }
            let mut faults = self.engine.faults.clone();
            faults.hang = false;
            self.engine.faults = faults;
        }
    }
}

async fn read_pty(pty: &Option<Pty>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pty {
        Some(pty) => pty.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_pty(pty: &Option<Pty>, bytes: &[u8]) -> std::io::Result<usize> {
    match pty {
        Some(pty) => pty.write(bytes).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
