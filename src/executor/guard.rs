//! The guard: a tiny process forked at proctord's start that kills the local runs'
//! process groups when proctord dies, however it dies (`kill -9`, the OOM killer).
//!
//! proctord stops its runs itself on cancel, deadline and graceful shutdown; a killed
//! proctord cannot. So [`start`] forks the guard while proctord is still one thread.
//! The guard holds the read end of a pipe whose write end only proctord holds
//! (close-on-exec: no run inherits it). proctord writes `+<pgid>\n` when a run's
//! group starts ([`watch`]) and `-<pgid>\n` once it is reaped ([`forget`]). When
//! proctord exits, for any reason, the kernel closes its write end: the guard reads
//! end-of-file, sends SIGKILL to every group still registered and exits. After a
//! clean shutdown there is none left, and the guard just exits.
//!
//! `PR_SET_PDEATHSIG` would not do: it reaches only the group's leader, not what the
//! leader started, and on Linux it fires when the *thread* that forked exits, which a
//! tokio blocking-pool thread does at any time.
//!
//! Limits: a process that leaves its group (`setsid`, `setpgid`) is not followed, and
//! a run that starts just before proctord dies may not have been registered yet.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{FromRawFd as _, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The write end of the guard's pipe; unset when no guard was started (the in-process
/// tests, a Kubernetes proctord), and then [`watch`] and [`forget`] do nothing.
static GUARD: OnceLock<File> = OnceLock::new();
/// Whether the guard was found gone (logged once).
static GONE: AtomicBool = AtomicBool::new(false);

/// The guard's process name, as `/proc/<pid>/comm`, `ps -e` and `top` show it.
pub const PROCESS_NAME: &str = "proctord-guard";
/// [`PROCESS_NAME`] for `prctl` (at most 15 bytes).
#[cfg(target_os = "linux")]
const PROCESS_NAME_C: &std::ffi::CStr = c"proctord-guard";

/// Forks the guard and keeps the write end of its pipe; answers the guard's pid.
///
/// Call it while the process is still single-threaded (before the async runtime,
/// Sentry or tracing start a thread): the guard is a fork of the caller and runs no
/// code that another thread could have left half-done. It refuses, with an error, when
/// it can see other threads, or when a guard was started already.
pub fn start() -> std::io::Result<libc::pid_t> {
    if GUARD.get().is_some() {
        return Err(std::io::Error::other("the guard is already started"));
    }
    if let Some(threads) = thread_count()
        && threads > 1
    {
        return Err(std::io::Error::other(format!(
            "proctord already has {threads} threads: the guard must be forked before any"
        )));
    }
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let [read, write] = fds;
    // SAFETY: both descriptors were just made by pipe and are ours. No other thread
    // can fork between pipe and these fcntl calls (single-threaded, checked above).
    // The write end is non-blocking so that a guard that stops reading can never
    // stall proctord: a message of a few bytes is written whole or not at all.
    unsafe {
        libc::fcntl(read, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(write, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(write, libc::F_SETFL, libc::O_NONBLOCK);
    }
    // SAFETY: the process is single-threaded (checked above), so the child is a
    // whole copy of it and may run any code, allocation included.
    match unsafe { libc::fork() } {
        -1 => {
            let error = std::io::Error::last_os_error();
            // SAFETY: closing the two descriptors made above, used nowhere else.
            unsafe {
                libc::close(read);
                libc::close(write);
            }
            Err(error)
        }
        0 => {
            // The guard never returns into proctord's code, not even on a panic.
            let code = match std::panic::catch_unwind(|| guard(read)) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the guard without running anything of proctord's (atexit
            // handlers, buffered output copied at the fork).
            unsafe { libc::_exit(code) }
        }
        pid => {
            // SAFETY: the read end is the guard's; proctord never reads it.
            unsafe { libc::close(read) };
            // SAFETY: `write` is an open descriptor that nothing else owns.
            let file = unsafe { File::from_raw_fd(write) };
            GUARD
                .set(file)
                .map_err(|_| std::io::Error::other("the guard is already started"))?;
            Ok(pid)
        }
    }
}

/// Registers a run's process group with the guard, which kills it if proctord dies
/// before [`forget`]. Call it right after the group's leader is spawned.
pub fn watch(pgid: libc::pid_t) {
    send(b'+', pgid);
}

/// Unregisters a run's process group once it is killed and its leader reaped.
pub fn forget(pgid: libc::pid_t) {
    send(b'-', pgid);
}

/// Writes one message: a single `write` of a few bytes on a non-blocking pipe, atomic
/// (below `PIPE_BUF`), so callers on any thread need no lock and never wait.
fn send(sign: u8, pgid: libc::pid_t) {
    let Some(mut pipe) = GUARD.get() else {
        return;
    };
    let mut message = [0u8; 24];
    let len = {
        let mut cursor = &mut message[..];
        let _ = writeln!(cursor, "{}{pgid}", sign as char);
        24 - cursor.len()
    };
    // EPIPE comes back as an error here: Rust binaries ignore SIGPIPE, so a dead
    // guard cannot take proctord down with it.
    if let Err(e) = pipe.write(&message[..len])
        && !GONE.swap(true, Ordering::Relaxed)
    {
        tracing::error!(
            error = %e,
            "the guard process does not answer: local runs will outlive proctord if it is killed"
        );
    }
}

/// How many threads the process has, when the system says (`/proc` on Linux).
fn thread_count() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(tasks.count())
}

/// The guard's whole life, in the forked child, until proctord is gone and its runs'
/// groups are killed.
fn guard(read: RawFd) {
    close_inherited(read);
    // SAFETY: setting dispositions and the name of this process only. Ctrl-C (or a
    // hang-up) reaches the terminal's whole process group: the guard must outlive
    // proctord to do its job, and proctord stops its runs itself on those signals.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Not to hold proctord's working directory (a mount) busy.
        libc::chdir(c"/".as_ptr());
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_NAME, PROCESS_NAME_C.as_ptr(), 0, 0, 0);
    }
    // SAFETY: reading our own process group id.
    let own_group = unsafe { libc::getpgrp() };
    let mut groups = std::collections::HashSet::new();
    let mut pending = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n as usize]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match parse(&line[..end]) {
                // Never our own group, init's, or a broadcast: only a run's group.
                Some(Message::Watch(pgid)) if pgid > 1 && pgid != own_group => {
                    groups.insert(pgid);
                }
                Some(Message::Forget(pgid)) => {
                    groups.remove(&pgid);
                }
                _ => {}
            }
        }
    }
    // End of file: proctord is gone.
    for &pgid in &groups {
        // SAFETY: killpg only sends a signal; a group that no longer exists is ESRCH.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
    if !groups.is_empty() {
        let note = format!(
            "{PROCESS_NAME}: proctord is gone; killed {} process group(s) of its runs\n",
            groups.len()
        );
        // SAFETY: writes a buffer of its length to stderr; the outcome does not matter.
        unsafe { libc::write(2, note.as_ptr().cast(), note.len()) };
    }
}

/// One line from proctord.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    /// `+<pgid>`: a run's group started.
    Watch(libc::pid_t),
    /// `-<pgid>`: that group is gone.
    Forget(libc::pid_t),
}

/// A line without its newline; `None` for anything else.
fn parse(line: &[u8]) -> Option<Message> {
    let (sign, digits) = line.split_first()?;
    let pgid = std::str::from_utf8(digits).ok()?.parse().ok()?;
    match sign {
        b'+' => Some(Message::Watch(pgid)),
        b'-' => Some(Message::Forget(pgid)),
        _ => None,
    }
}

/// Closes every descriptor the guard inherited but stdin, stdout, stderr and `keep`:
/// the guard must not hold proctord's sockets, database files or the pipe's write end.
fn close_inherited(keep: RawFd) {
    let listed = ["/proc/self/fd", "/dev/fd"].iter().find_map(|dir| {
        let entries = std::fs::read_dir(dir).ok()?;
        Some(
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
                .collect::<Vec<_>>(),
        )
    });
    // Listed once the directory's own descriptor is closed; closing that one again
    // is a harmless EBADF.
    let fds = listed.unwrap_or_else(|| {
        // SAFETY: sysconf only reads a limit.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
        (0..max.clamp(256, 65_536) as RawFd).collect()
    });
    for fd in fds {
        if fd > 2 && fd != keep {
            // SAFETY: closing a descriptor of this process, which uses none of them.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Message, parse};

    #[test]
    fn messages_are_parsed_and_anything_else_is_ignored() {
        let cases: [(&[u8], Option<Message>, &str); 6] = [
            (b"+123", Some(Message::Watch(123)), "a group started"),
            (b"-123", Some(Message::Forget(123)), "a group reaped"),
            (b"123", None, "no sign"),
            (b"+", None, "no pid"),
            (b"+12a", None, "not a number"),
            (b"", None, "empty"),
        ];
        for (line, expected, what) in cases {
            assert_eq!(parse(line), expected, "{what}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_name_given_to_prctl_is_the_documented_one() {
        assert_eq!(super::PROCESS_NAME_C.to_str(), Ok(super::PROCESS_NAME));
        assert!(super::PROCESS_NAME.len() <= 15, "comm holds 15 bytes");
    }
}
