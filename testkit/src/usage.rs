//! What a process costs, as the OS accounts it: a child's wall time, CPU and peak RSS
//! from `wait4`'s rusage (with a time limit), a live process's CPU seconds from
//! /proc/PID/stat, and how busy the whole machine has been (the machine may be shared,
//! and a measurement should say how much of it was someone else's).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// How a child process ran (serialisable, so a harness can keep it with its results).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Spawn to reap.
    pub wall_seconds: f64,
    /// CPU in user mode.
    pub user_seconds: f64,
    /// CPU in the kernel.
    pub sys_seconds: f64,
    /// Peak resident set size (KiB).
    pub max_rss_kib: u64,
    /// Exit code, or -signal.
    pub status: i32,
    /// Killed at the time limit.
    pub timed_out: bool,
}

impl Usage {
    /// CPU seconds, user + system.
    pub fn cpu(&self) -> f64 {
        self.user_seconds + self.sys_seconds
    }
}

/// Makes a child die when its parent dies (SIGKILL on parent exit).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and the only call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Spawns `cmd` (it dies with the caller), waits for it with `wait4`, and kills it at
/// `limit`. Note that Linux starts a child's peak RSS at its forker's RSS at exec: a
/// caller holding much memory should run this from a small intermediary process.
pub fn run_with_usage(mut cmd: Command, limit: Duration) -> io::Result<Usage> {
    die_with_parent(&mut cmd);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; wait4 fills it for our own child, which
        // nothing else waits for (the std Child is never waited on).
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = loop {
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break r;
            }
        };
        let _ = tx.send((r, status, ru, start.elapsed()));
    });
    let (got, timed_out) = match rx.recv_timeout(limit) {
        Ok(v) => (v, false),
        Err(_) => {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (rx.recv().map_err(io::Error::other)?, true)
        }
    };
    drop(child);
    let (r, status, ru, wall) = got;
    if r != pid {
        return Err(io::Error::other(format!(
            "wait4: {}",
            io::Error::last_os_error()
        )));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let status = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok(Usage {
        wall_seconds: wall.as_secs_f64(),
        user_seconds: tv(ru.ru_utime),
        sys_seconds: tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        status,
        timed_out,
    })
}

fn ticks(t: f64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    t / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0)
}

/// CPU seconds (user + system) of a live process, from /proc/PID/stat (0 when gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime: the 12th and 13th fields after the parenthesised command name.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    ticks(f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0))
}

/// CPU seconds the whole machine has been busy (user, nice, system, irq, softirq, steal),
/// from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ticks([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_cpu_and_rss_of_a_child() {
        let mut c = Command::new("sh");
        let script = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exit 3";
        c.args(["-c", script]);
        let m = run_with_usage(c, Duration::from_secs(60)).expect("run");
        assert_eq!(m.status, 3);
        let cpu = m.user_seconds + m.sys_seconds;
        assert!(
            cpu > 0.0 && m.max_rss_kib > 100 && m.wall_seconds > 0.0,
            "{m:?}"
        );
        assert!(cpu_seconds(std::process::id()) >= 0.0 && machine_busy_seconds() > 0.0);
    }

    #[test]
    fn a_child_past_its_limit_is_killed() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let m = run_with_usage(c, Duration::from_millis(200)).expect("run");
        assert!(m.timed_out);
        assert_eq!(m.status, -libc::SIGKILL);
    }
}
