//! Output that never panics: `println!` and `eprintln!` panic when the reader has gone
//! (`snapferry repo ls | head -1`, a closed stderr). These write and ignore failures;
//! once stdout is closed, further output is skipped and the command ends with the exit
//! code it would have had.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout; remembers a closed stdout.
pub fn out_line(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if o.write_fmt(args).and_then(|_| o.write_all(b"\n")).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes text to stdout as it is; remembers a closed stdout.
pub fn out_text(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if o.write_all(text.as_bytes())
        .and_then(|_| o.flush())
        .is_err()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes one line to stderr, ignoring a closed stderr.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|_| e.write_all(b"\n"));
}

/// `println!` that never panics.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::output::out_line(format_args!($($t)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::output::err_line(format_args!($($t)*)) };
}
