//! berth-init: the tiny init that `--init` puts at PID 1 of a container (bind-mounted read-only
//! at /dev/init). It starts the command, forwards the signals it gets to it, reaps every zombie
//! that the pid namespace hands it, and exits with the command's status. Built by build.rs as a
//! static binary (it must run in any image, with or without a libc), from std and raw syscalls.

use std::ffi::CString;

#[repr(C)]
struct SigSet([u64; 16]);

#[repr(C)]
struct SigInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _rest: [u8; 116],
}

unsafe extern "C" {
    fn sigfillset(set: *mut SigSet) -> i32;
    fn sigprocmask(how: i32, set: *const SigSet, old: *mut SigSet) -> i32;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> i32;
    fn fork() -> i32;
    fn execvp(file: *const i8, argv: *const *const i8) -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn setpgid(pid: i32, pgid: i32) -> i32;
    fn _exit(code: i32) -> !;
}

const SIG_BLOCK: i32 = 0;
const SIG_SETMASK: i32 = 2;
const SIGCHLD: i32 = 17;
const SIGTTIN: i32 = 21;
const SIGTTOU: i32 = 22;
const WNOHANG: i32 = 1;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("berth-init: no command given");
        std::process::exit(126);
    }
    let cargs: Vec<CString> = match args.iter().map(|a| CString::new(a.as_str())).collect() {
        Ok(v) => v,
        Err(_) => {
            eprintln!("berth-init: an argument holds a NUL byte");
            std::process::exit(126);
        }
    };
    let mut argv: Vec<*const i8> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: plain libc calls on our own process; the child only restores its mask and execs.
    unsafe {
        let mut all = SigSet([0; 16]);
        let mut old = SigSet([0; 16]);
        sigfillset(&mut all);
        sigprocmask(SIG_BLOCK, &all, &mut old);
        let child = fork();
        if child < 0 {
            eprintln!("berth-init: fork: {}", std::io::Error::last_os_error());
            _exit(126);
        }
        if child == 0 {
            // Its own process group, so that a signal to the group reaches the command's children.
            setpgid(0, 0);
            sigprocmask(SIG_SETMASK, &old, std::ptr::null_mut());
            execvp(argv[0], argv.as_ptr());
            let e = std::io::Error::last_os_error();
            eprintln!("berth-init: exec {}: {e}", args[0]);
            _exit(if e.raw_os_error() == Some(2) { 127 } else { 126 });
        }
        loop {
            let mut info = SigInfo { signo: 0, errno: 0, code: 0, _rest: [0; 116] };
            if sigwaitinfo(&all, &mut info) < 0 {
                continue;
            }
            match info.signo {
                SIGCHLD => loop {
                    let mut status = 0;
                    let pid = waitpid(-1, &mut status, WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == child {
                        let code = if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) };
                        _exit(code);
                    }
                },
                SIGTTIN | SIGTTOU => {}
                sig => {
                    kill(child, sig);
                }
            }
        }
    }
}
