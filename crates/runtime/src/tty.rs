//! The caller's terminal joined to a container's pty: `berth-runtime run` of a terminal process
//! without a console socket, and the engine's `exec -t` and `attach`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Our terminal in raw mode (the container's pty does the line editing) until dropped; nothing
/// when stdin is not a terminal.
pub struct RawMode(Option<libc::termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restoring the saved settings.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Gives the terminal `to` the window size of the terminal `from` (nothing if `from` is none).
pub fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a zeroed winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Writes all of `data` to `fd`, giving up quietly when the reader is gone.
pub fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: write from our buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n <= 0 {
            return;
        }
        data = &data[n as usize..];
    }
}

/// Copies the pty's output to our stdout and (with `stdin`) our input to the pty, our terminal
/// raw and its size followed (SIGWINCH, through a signalfd while the relay runs), until process
/// `pid` is gone and its output drained, or the pty closes. Does not reap `pid`.
pub fn relay(master: &OwnedFd, pid: i32, stdin: bool) {
    let _raw = RawMode::enter();
    let m = master.as_raw_fd();
    copy_winsize(0, m);
    // SAFETY: a signal set of our own; SIGWINCH blocked for this thread while the signalfd
    // reads it, the previous mask restored at the end.
    let (winch, old) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        (libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK), old)
    };
    // SAFETY: pidfd_open of a process we waited for nothing of yet.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    let mut input = stdin;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let mut fds = [
            libc::pollfd { fd: m, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if input { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: winch, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll over fds we hold.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            // SAFETY: read into our buffer.
            let n = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            write_all(1, &buf[..n as usize]);
        }
        if fds[1].revents != 0 {
            // SAFETY: read into our buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                input = false;
            } else {
                write_all(m, &buf[..n as usize]);
            }
        }
        if fds[2].revents != 0 {
            let mut info = [0u8; 128];
            // SAFETY: drain the signalfd into our buffer.
            while unsafe { libc::read(winch, info.as_mut_ptr().cast(), info.len()) } > 0 {}
            copy_winsize(0, m);
        }
        if fds[3].revents != 0 && fds[0].revents == 0 {
            // The process is gone and its output drained.
            break;
        }
    }
    // SAFETY: closing the fds we opened, restoring the mask we saved.
    unsafe {
        for fd in [winch, pidfd] {
            if fd >= 0 {
                libc::close(fd);
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}
