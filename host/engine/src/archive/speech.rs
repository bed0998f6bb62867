//! The speech archive (`compat-protocols.md` §1.4): on a channel with `archive_speech = true`,
//! every synthesized audio answered whole (OpenAI's speech op, a native route whose plugin
//! decodes the vendor's audio) is written as
//! `<speech_archive_dir>/<user id>/<YYYY-MM-DD>/<HHMMSS>_<8 hex>.<format>` (UTC) with a UTF-8
//! sidecar `.txt` naming the file, the time, the user and the key, then the text spoken.
//!
//! Invariants: the consumer's answer never waits for the archive (the files are written in a
//! blocking task after it); a failure is logged, never answered; a file is written to a
//! temporary name and renamed, so an audio without its sidecar or a half-written one is never
//! seen; the format is a short alphanumeric word (anything else is `bin`), so no name a
//! plugin or vendor chose becomes a path.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One synthesized audio to keep.
pub struct Speech {
    pub user_id: i64,
    pub key_name: String,
    pub audio: bytes::Bytes,
    pub format: String,
    pub text: String,
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

/// Writes `speech` under `dir` in the background.
pub fn keep(dir: PathBuf, speech: Speech) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write(&dir, &speech, std::time::SystemTime::now(), rand::random()) {
            tracing::warn!(error = %e, user_id = speech.user_id, "could not keep synthesized speech in the archive");
        }
    });
}

fn write(dir: &Path, s: &Speech, now: std::time::SystemTime, tag: u32) -> std::io::Result<PathBuf> {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = tollgate_base::calendar::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let folder = dir.join(s.user_id.to_string()).join(format!("{y:04}-{m:02}-{d:02}"));
    std::fs::create_dir_all(&folder)?;
    let format = if !s.format.is_empty() && s.format.len() <= 8 && s.format.bytes().all(|b| b.is_ascii_alphanumeric()) {
        s.format.to_ascii_lowercase()
    } else {
        "bin".into()
    };
    let stem = format!("{:02}{:02}{:02}_{tag:08x}", t / 3600, t % 3600 / 60, t % 60);
    let name = format!("{stem}.{format}");
    let time = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t % 3600 / 60, t % 60);
    let sidecar = format!("file: {name}\ntime: {time}\nuser: {}\nkey: {}\ntext:\n{}\n", s.user_id, s.key_name, s.text);
    let put = |file: &str, bytes: &[u8]| -> std::io::Result<()> {
        let part = folder.join(format!(".{file}.part"));
        let mut f = std::fs::File::create(&part)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&part, folder.join(file))
    };
    put(&format!("{stem}.txt"), sidecar.as_bytes())?;
    put(&name, &s.audio)?;
    Ok(folder.join(name))
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
