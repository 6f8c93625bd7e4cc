//! The pseudo-terminal a simulated modem lives on, following ENGINEERING.md's pty rules: raw from the
//! start, one slave fd held for the simulator's life, the exclusive lock cleared for re-opens, and no nix
//! `cfgetospeed` on a port serialport configured.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::termios::{self, BaudRate, SetArg};
use tokio::io::unix::AsyncFd;

/// The baud rate the simulator parks the slave at while hung: any DTE that opens the port sets its own, so
/// a changed rate means "the port was re-opened".
const SENTINEL_BAUD: BaudRate = BaudRate::B50;

pub(crate) struct Pty {
    /// Nonblocking master: the modem's side.
    master: AsyncFd<OwnedFd>,
    /// Held open for the pty's life so the master never reads EIO when the DTE closes the port.
    slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    pub fn open() -> io::Result<Pty> {
        let pair = nix::pty::openpty(None, None)?;
        // Raw before anyone opens it, or the line discipline echoes and maps CR to NL on what the modem
        // writes before the DTE configures the port (the boot burst).
        let mut attrs = termios::tcgetattr(&pair.slave)?;
        termios::cfmakeraw(&mut attrs);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &attrs)?;
        let flags = OFlag::from_bits_truncate(fcntl(&pair.master, FcntlArg::F_GETFL)?);
        fcntl(&pair.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        let path = nix::unistd::ttyname(&pair.slave)?;
        // SAFETY: the master fd is owned by the AsyncFd from here on and never replaced or closed elsewhere.
        let master = unsafe { AsyncFd::register(pair.master) }.map_err(io::Error::from)?;
        Ok(Pty {
            master,
            slave: pair.slave,
            path,
        })
    }

    /// The slave device (`/dev/pts/N`) a DTE opens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), buf)?)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), buf)?)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Drop whatever the DTE wrote that the modem has not read yet (the master is nonblocking).
    pub fn discard_input(&self) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        loop {
            match nix::unistd::read(self.master.get_ref(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Clear `TIOCEXCL`, which serialport sets on open and clears only on a clean close: a DTE killed with
    /// the port open leaves it set, and then only root could re-open the port. serialport's exclusive
    /// `flock` still keeps two DTEs apart.
    pub fn clear_exclusive(&self) -> io::Result<()> {
        // SAFETY: TIOCNXCL takes no argument and the fd is a tty we own.
        let rc = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::TIOCNXCL) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Park the line at [`SENTINEL_BAUD`] so [`Pty::reopened`] can tell when a DTE opens it again.
    pub fn arm_reopen_detector(&self) -> io::Result<()> {
        let mut attrs = termios::tcgetattr(&self.slave)?;
        termios::cfsetspeed(&mut attrs, SENTINEL_BAUD)?;
        termios::tcsetattr(&self.slave, SetArg::TCSANOW, &attrs)?;
        Ok(())
    }

    /// Whether a DTE has configured the port since [`Pty::arm_reopen_detector`]. Reads the raw speed bits:
    /// nix's `cfgetospeed` panics on the custom rates serialport sets.
    pub fn reopened(&self) -> io::Result<bool> {
        let attrs: libc::termios = termios::tcgetattr(&self.slave)?.into();
        Ok(attrs.c_cflag & libc::CBAUD != SENTINEL_BAUD as libc::tcflag_t)
    }
}

/// Point `link` at `target`, atomically (a new symlink renamed over the old one), as udev maintains
/// `/dev/serial/by-path` names.
pub(crate) fn point_link(link: &Path, target: &Path) -> io::Result<()> {
    let mut tmp = link.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_cross_the_pty_raw() {
        let pty = Pty::open().unwrap();
        assert!(pty.path().starts_with("/dev/pts"));
        pty.write(b"\r\nRDY\r\n").await.unwrap();
        // Read back through a second slave fd: no CR/NL mapping, no echo.
        let slave = std::fs::File::open(pty.path()).unwrap();
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"\r\nRDY\r\n");
        pty.arm_reopen_detector().unwrap();
        assert!(!pty.reopened().unwrap());
        let mut attrs = termios::tcgetattr(&slave).unwrap();
        termios::cfsetspeed(&mut attrs, BaudRate::B115200).unwrap();
        termios::tcsetattr(&slave, SetArg::TCSANOW, &attrs).unwrap();
        assert!(pty.reopened().unwrap());
        pty.clear_exclusive().unwrap();
    }

    /// A DTE killed with the port open leaves its exclusive mode set (serialport clears it only on a
    /// clean close): the simulator clears it. Read back with TIOCGEXCL, since opening again as root
    /// succeeds regardless.
    #[tokio::test]
    async fn the_exclusive_mode_a_killed_dte_leaves_is_cleared() {
        let exclusive = |pty: &Pty| {
            let mut on: libc::c_int = 0;
            // SAFETY: TIOCGEXCL writes one int through the pointer; the fd is a tty we own.
            let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGEXCL, &mut on) };
            assert_ne!(rc, -1, "{}", io::Error::last_os_error());
            on != 0
        };
        let pty = Pty::open().unwrap();
        assert!(!exclusive(&pty));
        // What serialport does on open; the fd then closes without TIOCNXCL, as the kernel closes a
        // killed process's.
        let dte = std::fs::File::open(pty.path()).unwrap();
        // SAFETY: TIOCEXCL takes no argument and the fd is a tty we opened.
        assert_ne!(unsafe { libc::ioctl(dte.as_raw_fd(), libc::TIOCEXCL) }, -1);
        drop(dte);
        assert!(exclusive(&pty), "left set");
        pty.clear_exclusive().unwrap();
        assert!(!exclusive(&pty));
    }

    #[test]
    fn link_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("modem0");
        point_link(&link, Path::new("/dev/pts/1")).unwrap();
        point_link(&link, Path::new("/dev/pts/2")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/pts/2"));
    }
}
