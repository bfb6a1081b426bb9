//! Standard output for the command line: a write that fails ends the command with a
//! clear status instead of a panic (`println!` panics). A reader that went away (`|
//! head`) stops it quietly with the status of a tool ended by SIGPIPE; any other error
//! (a full disk) is reported on stderr with status 1.

use std::fmt;
use std::io::{self, Write};

/// Status of a command whose standard output was closed by its reader: 128 + SIGPIPE,
/// what a shell shows for a tool the signal ended.
pub const CLOSED_PIPE_STATUS: i32 = 141;

/// Writes `args` and a line end (`newline`), or only `args` and then flushes (what
/// does not end a line would otherwise wait in the buffer, and a failure to write it at
/// exit would go unseen); ends the process when standard output fails.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if let Err(e) = try_write(args, newline) {
        fail(&e);
    }
}

/// [`write`] that returns the error, for a command with exit statuses of its own.
pub fn try_write(args: fmt::Arguments<'_>, newline: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    if newline {
        out.write_all(b"\n")
    } else {
        out.flush()
    }
}

fn fail(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_PIPE_STATUS);
    }
    eprintln!("relaygate: cannot write to standard output: {e}");
    std::process::exit(1);
}
