//! The speech archive (`compat-protocols.md` §1.4): on a channel with `archive_speech = true`,
//! every synthesized audio answered whole (OpenAI's speech op, a native route whose plugin
//! decodes the vendor's audio) is written as
//! `<speech_archive_dir>/<user id>/<YYYY-MM-DD>/<HHMMSS>_<8 hex>.<format>` (UTC) with a UTF-8
//! sidecar `.txt` naming the file, the time, the user and the key, then the text spoken.
//!
//! Invariants: the consumer's answer never waits for the archive (the files are written in a
//! blocking task after it), and at most `MAX_PENDING` writes wait at once (more are dropped,
//! logged: memory stays bounded when the disk is slow); a failure is logged, never answered,
//! and leaves nothing behind; each file is written under a temporary name (created new, 0600,
//! in 0700 folders: only the gateway's user reads what was spoken) and renamed, so a
//! half-written audio is never seen, and an existing file is never replaced; the format is a
//! short alphanumeric word (anything else is `bin`), so no name a plugin or vendor chose
//! becomes a path; day folders older than `archive_retention_days` are deleted hourly.

use crate::exchange::{CallError, Outcome};
use crate::store::private_fs;
use crate::{CallRequest, Engine};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes waiting or running at once; more are dropped.
const MAX_PENDING: usize = 64;
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// One synthesized audio to keep.
pub struct Speech {
    pub user_id: i64,
    pub key_name: String,
    pub audio: bytes::Bytes,
    pub format: String,
    pub text: String,
}

impl Engine {
    /// Keeps a successful reply's synthesized speech in the speech archive: the plugin's
    /// decoded audio, or the audio bytes of OpenAI's speech op (its text the request's `input`).
    pub(crate) fn keep_speech(&self, r: &CallRequest, result: &mut Result<Outcome, CallError>) {
        let Ok(Outcome::Reply { status: 200..=299, error: None, headers, body, speech, .. }) = result else { return };
        // The decoded audio is the archive's alone: taken, not copied.
        let (audio, format, text) = match speech.take() {
            Some(s) => (bytes::Bytes::from(s.audio), s.format, s.text),
            None if r.op == "speech" => {
                let content_type = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-type"));
                let content_type = content_type.map_or("", |h| h.value.as_str());
                if !content_type.starts_with("audio/") {
                    return;
                }
                let input = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["input"].as_str().map(str::to_string))
                    .unwrap_or_default();
                (body.clone(), format_of(content_type).to_string(), input)
            }
            None => return,
        };
        let speech = Speech { user_id: r.consumer.user_id, key_name: r.consumer.name.clone(), audio, format, text };
        keep(self.archive.speech_dir.clone(), speech);
    }
}

/// The format word of an audio content type (`audio/mpeg` → `mp3`).
pub fn format_of(content_type: &str) -> &'static str {
    match content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/flac" => "flac",
        "audio/pcm" | "audio/l16" => "pcm",
        "audio/opus" | "audio/ogg" => "opus",
        "audio/aac" => "aac",
        _ => "bin",
    }
}

/// Writes `speech` under `dir` in the background (or drops it when `MAX_PENDING` wait).
pub fn keep(dir: PathBuf, speech: Speech) {
    if PENDING.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
        PENDING.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(user_id = speech.user_id, "the speech archive is behind; this audio was not kept");
        return;
    }
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write(&dir, &speech, std::time::SystemTime::now(), rand::random()) {
            tracing::warn!(error = %format!("{e:#}"), user_id = speech.user_id, "could not keep synthesized speech in the archive");
        }
        PENDING.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Deletes the day folders (`<dir>/<user>/<YYYY-MM-DD>`) of days before `before_day` (a day
/// number); returns how many.
pub fn expire(dir: &Path, before_day: i64) -> usize {
    let mut removed = 0;
    for user in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for day in std::fs::read_dir(user.path()).into_iter().flatten().flatten() {
            let name = day.file_name();
            let Some(n) = name.to_str().and_then(day_number) else { continue };
            if n < before_day && std::fs::remove_dir_all(day.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// The day number of a `YYYY-MM-DD` folder name.
fn day_number(name: &str) -> Option<i64> {
    let mut parts = name.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if (y.len(), m.len(), d.len()) != (4, 2, 2) {
        return None;
    }
    Some(tollgate_base::calendar::days_from_civil(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?))
}

fn write(dir: &Path, s: &Speech, now: std::time::SystemTime, tag: u32) -> anyhow::Result<PathBuf> {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = tollgate_base::calendar::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let folder = dir.join(s.user_id.to_string()).join(format!("{y:04}-{m:02}-{d:02}"));
    private_fs::create_dir(&folder)?;
    let format = if !s.format.is_empty() && s.format.len() <= 8 && s.format.bytes().all(|b| b.is_ascii_alphanumeric()) {
        s.format.to_ascii_lowercase()
    } else {
        "bin".into()
    };
    let (hh, mm, ss) = (t / 3600, t % 3600 / 60, t % 60);
    let stem = format!("{hh:02}{mm:02}{ss:02}_{tag:08x}");
    let name = format!("{stem}.{format}");
    let time = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z");
    let sidecar = format!("file: {name}\ntime: {time}\nuser: {}\nkey: {}\ntext:\n{}\n", s.user_id, s.key_name, s.text);
    let (audio_part, text_part) = (folder.join(format!(".{name}.part")), folder.join(format!(".{stem}.txt.part")));
    let (audio_path, text_path) = (folder.join(&name), folder.join(format!("{stem}.txt")));
    if audio_path.exists() || text_path.exists() {
        anyhow::bail!("{} exists already", audio_path.display());
    }
    let written = private_fs::write_new(&text_part, sidecar.as_bytes())
        .and_then(|()| private_fs::write_new(&audio_part, &s.audio))
        .and_then(|()| std::fs::rename(&text_part, &text_path).map_err(anyhow::Error::from))
        .and_then(|()| std::fs::rename(&audio_part, &audio_path).map_err(anyhow::Error::from));
    if let Err(e) = written {
        // Nothing half-kept: neither part, nor a text without its audio.
        for leftover in [&audio_part, &text_part, &text_path] {
            let _ = std::fs::remove_file(leftover);
        }
        return Err(e);
    }
    Ok(audio_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_kept_by_user_and_day_with_its_text_beside_it() {
        let dir = std::env::temp_dir().join(format!("tollgate-speech-{}", std::process::id()));
        let speech = |format: &str| Speech {
            user_id: 7,
            key_name: "app".into(),
            audio: bytes::Bytes::from_static(b"ID3audio"),
            format: format.into(),
            text: "你好 world".into(),
        };
        // 2026-12-02 08:30:05 UTC.
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_200_205);
        let path = write(&dir, &speech("mp3"), at, 0xabc).unwrap();
        assert_eq!(path, dir.join("7/2026-12-02/083005_00000abc.mp3"));
        assert_eq!(std::fs::read(&path).unwrap(), b"ID3audio");
        let sidecar = std::fs::read_to_string(dir.join("7/2026-12-02/083005_00000abc.txt")).unwrap();
        assert_eq!(
            sidecar,
            "file: 083005_00000abc.mp3\ntime: 2026-12-02T08:30:05Z\nuser: 7\nkey: app\ntext:\n你好 world\n"
        );
        // A format that is not a plain word never becomes part of a path.
        let path = write(&dir, &speech("../../x"), at, 1).unwrap();
        assert_eq!(path.file_name().unwrap(), "083005_00000001.bin");
        assert_eq!(format_of("audio/mpeg; charset=x"), "mp3");
        // A name already taken is never replaced.
        assert!(write(&dir, &speech("mp3"), at, 0xabc).is_err());
        assert_eq!(std::fs::read(dir.join("7/2026-12-02/083005_00000abc.mp3")).unwrap(), b"ID3audio");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(dir.join("7/2026-12-02")).unwrap().mode() & 0o777, 0o700);
        }
        // Retention removes whole days before the one given.
        let today = tollgate_base::calendar::days_from_civil(2026, 12, 2);
        assert_eq!(expire(&dir, today), 0);
        assert_eq!(expire(&dir, today + 1), 1);
        assert!(!dir.join("7/2026-12-02").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
