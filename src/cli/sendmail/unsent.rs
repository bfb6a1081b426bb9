//! Messages `sendmail` could not hand to the gateway, kept on disk until `sendmail -q`
//! sends them: `ID.eml` (the message as it would have been sent) beside `ID.env` (JSON:
//! the envelope sender and recipients, when it was saved, why). Both are fsynced; the
//! envelope is written last, so a message without one is incomplete and never listed.
//! The directory is `~/.local/state/relaygate/unsent` (without `HOME`, one under the
//! system's temp dir).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The envelope saved beside a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The envelope sender (`""` for the null sender).
    pub from: String,
    pub rcpts: Vec<String>,
    /// Unix ms.
    pub saved_at: i64,
    /// Why it could not be submitted.
    #[serde(default)]
    pub reason: String,
}

/// One saved message.
#[derive(Debug, Clone)]
pub struct Saved {
    pub id: String,
    pub envelope: Envelope,
    pub message: PathBuf,
    pub size: u64,
}

pub fn dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".local/state/relaygate/unsent"))
        .unwrap_or_else(|| std::env::temp_dir().join("relaygate-unsent"))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Saves a message with its envelope; returns the message's path.
pub fn save(message: &[u8], envelope: &Envelope) -> Result<PathBuf, String> {
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let id = format!(
        "{}-{}",
        crate::model::format_id((crate::model::now_ms().max(0) as u64) << 12),
        std::process::id()
    );
    let eml = dir.join(format!("{id}.eml"));
    write_synced(&eml, message)?;
    let json = serde_json::to_vec_pretty(envelope).map_err(|e| e.to_string())?;
    write_synced(&dir.join(format!("{id}.env")), &json)?;
    Ok(eml)
}

/// Every complete saved message, oldest first. Unreadable envelopes are reported.
pub fn list() -> Result<Vec<Saved>, String> {
    let dir = dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("env") {
            continue;
        }
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let message = dir.join(format!("{id}.eml"));
        let Ok(meta) = std::fs::metadata(&message) else {
            continue;
        };
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let envelope: Envelope = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not an envelope: {e}", path.display()))?;
        out.push(Saved {
            id,
            envelope,
            message,
            size: meta.len(),
        });
    }
    out.sort_by(|a, b| (a.envelope.saved_at, &a.id).cmp(&(b.envelope.saved_at, &b.id)));
    Ok(out)
}

/// Removes a message that went out.
pub fn remove(saved: &Saved) -> Result<(), String> {
    let env = saved.message.with_extension("env");
    std::fs::remove_file(&env).map_err(|e| format!("{}: {e}", env.display()))?;
    std::fs::remove_file(&saved.message).map_err(|e| format!("{}: {e}", saved.message.display()))
}

/// The `-bp` listing.
pub fn render(saved: &[Saved]) -> String {
    if saved.is_empty() {
        return "mail queue is empty\n".into();
    }
    let mut out = format!(
        "{} message(s) saved while the gateway was unreachable ({}); `sendmail -q` sends them:\n",
        saved.len(),
        dir().display()
    );
    for s in saved {
        out.push_str(&format!(
            "{}  {:>8} bytes  {}  <{}>\n",
            s.id,
            s.size,
            crate::model::rfc3339(s.envelope.saved_at),
            s.envelope.from
        ));
        for r in &s.envelope.rcpts {
            out.push_str(&format!("        <{r}>\n"));
        }
        if !s.envelope.reason.is_empty() {
            out.push_str(&format!("        ({})\n", s.envelope.reason));
        }
    }
    out
}
