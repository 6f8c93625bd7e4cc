//! The daemon's modems: one worker per enabled `[[modems]]` entry, and an in-process simulator on a real pty
//! behind every `sim:PROFILE` device, so a demo box is driven through tokio-serial exactly like hardware.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Device};
use crate::modem::job::{ModemId, WorkerEvent};
use crate::modem::{WorkerConfig, WorkerHandle, spawn_worker};
use crate::sim::{self, SimConfig, SimError, SimHandle};

/// One running modem: its worker and, for `sim:` devices, the simulator it talks to.
pub struct ModemRuntime {
    pub id: ModemId,
    pub handle: WorkerHandle,
    /// The `[[modems]]` entry it was started from, so a reload can tell what changed.
    pub config: config::Modem,
    /// Kept alive for the worker's life: dropping it would close the pty under the worker.
    sim: Option<SimHandle>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Start the worker (and simulator) for one configured modem. `ordinal` makes simulated identities distinct;
/// `instant_sim` makes a simulator answer without delays (tests).
pub fn start(
    modem: &config::Modem,
    ordinal: usize,
    instant_sim: bool,
    events: mpsc::Sender<WorkerEvent>,
    parent: &CancellationToken,
) -> Result<ModemRuntime, SimError> {
    let id: ModemId = modem.id.as_str().into();
    let (device, sim) = match &modem.device {
        Device::Serial(path) => (path.clone(), None),
        Device::Sim(profile) => {
            let timing = if instant_sim {
                SimConfig::instant(*profile)
            } else {
                SimConfig::new(*profile)
            };
            // Numbered apart from `modemgate simulate`'s (1, 2, ...), so a test rig that mixes both has
            // distinct SIMs: daily caps count per ICCID.
            let handle = sim::spawn(timing.numbered(500 + ordinal))?;
            (handle.path(), Some(handle))
        }
    };
    let mut worker = WorkerConfig::new(id.clone(), device);
    worker.baud = modem.baud;
    worker.pin = modem.pin.as_ref().map(|pin| pin.digits().to_owned());
    worker.smsc = modem.smsc.as_ref().map(|smsc| smsc.as_str().to_owned());
    let cancel = parent.child_token();
    let (handle, task) = spawn_worker(worker, events, cancel.clone());
    if modem.paused {
        handle.pause();
    }
    Ok(ModemRuntime {
        id,
        handle,
        config: modem.clone(),
        sim,
        cancel,
        task,
    })
}

impl ModemRuntime {
    /// The simulator behind a `sim:PROFILE` device.
    pub fn sim(&self) -> Option<&SimHandle> {
        self.sim.as_ref()
    }

    /// Stop the worker, giving an in-flight command up to `grace` to finish, then the simulator.
    pub async fn stop(self, grace: Duration) {
        self.cancel.cancel();
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}
